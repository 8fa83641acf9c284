"""URL-list corpus: planning without whole files, the same rows from every list format, and every
download fault counted under its reason (all traffic to a loopback server this test starts)."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.corpus.base import CorpusConfig, build_reader
from pipelines.corpus.fetch import DOWNLOAD_FAILURES, FetchPolicy, Fetcher, is_image_magic, refused_by_robots_tag
from pipelines.records import SkipSample
from tests.image_server import FAULT_REASON, FAULTS, ImageServer

FAST = dict(download_connect_timeout=2.0, download_read_timeout=1.0, download_retries=1, download_backoff=0.05,
            download_max_bytes=1_000_000, download_threads=4)


def jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (value, 255 - value, 0)).save(buf, "JPEG")
    return buf.getvalue()


IMAGES = {f"i{n}": jpeg(20 * n) for n in range(6)}
CAPTIONS = ['a cat, "quoted"\non two lines', "a dog", "", "a tree\tand a tab?", "a red car", "a bird"]


@pytest.fixture(scope="module")
def server():
    with ImageServer(IMAGES) as s:
        yield s


def rows(server) -> list[dict]:
    return [{"url": server.url("img", f"i{n}"), "caption": c, "sid": f"s{n}", "w": n}
            for n, c in enumerate(CAPTIONS)]


def write_list(url: str, kind: str, table: list[dict]) -> None:
    if kind == "parquet":
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(table), buf, row_group_size=4)
        data = buf.getvalue()
    elif kind == "jsonl":
        data = "".join(json.dumps(r) + "\n" + ("\n" if i == 2 else "") for i, r in enumerate(table)).encode()
    elif kind == "csv":
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
        data = out.getvalue().encode()
    else:  # tsv without a header, CC3M-style (tabs and newlines are not allowed in its fields)
        data = "".join(f"{r['caption'].replace(chr(9), ' ').replace(chr(10), ' ')}\t{r['url']}\t{r['sid']}\t{r['w']}\r\n"
                       for r in table).encode()
    with fsspec.open(url, "wb") as f:
        f.write(data)


def read_all(cfg: CorpusConfig):
    reader = build_reader(cfg)
    units = reader.plan_units()
    skips: Counter = Counter()
    records = [r for u in units for r in reader.read_unit(u, skips)]
    reader.close()
    return units, records, skips


@pytest.mark.parametrize("kind", ["parquet", "csv", "tsv", "jsonl"])
def test_every_list_format_gives_the_same_records(server, kind) -> None:
    url = f"memory://urls/{kind}/part-0.{kind}"
    write_list(url, kind, rows(server))
    extra = {"list_columns": ["caption", "url", "sid", "w"]} if kind == "tsv" else {}
    cfg = CorpusConfig(format="urls", url=url, images_per_unit=4, key_column="sid", extra_columns=["w"],
                       **extra, **FAST)
    units, records, skips = read_all(cfg)
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 6)]
    assert (units[0].byte_range is None) == (kind == "parquet")
    assert [r.key for r in records] == [f"s{n}" for n in range(6)]
    assert [r.image_bytes for r in records] == list(IMAGES.values())
    assert records[1].captions == ["a dog"] and records[2].captions == []
    assert records[0].captions[0].startswith("a cat")
    assert records[4].meta == {"file": f"part-0.{kind}", "row": 4,
                               "extra": {"w": 4 if kind in ("parquet", "jsonl") else "4"}}
    assert records[4].source_url == server.url("img", "i4") and records[4].image_id == 4
    assert skips == Counter({"caption_empty": 1})
    assert build_reader(cfg).plan_units() == units  # deterministic


def test_csv_units_cut_between_multiline_records(server) -> None:
    url = "memory://urls/cut/list.csv"
    write_list(url, "csv", rows(server))
    for per_unit in (1, 2, 5):
        units, records, _ = read_all(CorpusConfig(format="urls", url=url, images_per_unit=per_unit, **FAST))
        assert [r.key for r in records] == [f"list_{n:09d}" for n in range(6)]
        assert records[0].captions == ['a cat, "quoted" on two lines']
        assert sum(u.stop - u.start for u in units) == 6


def test_missing_column_and_bad_suffix_are_clear_errors(server) -> None:
    url = "memory://urls/bad/list.jsonl"
    write_list(url, "jsonl", rows(server))
    write_list("memory://urls/bad2/list.csv", "csv", rows(server))
    with pytest.raises(ValueError, match="column"):
        build_reader(CorpusConfig(format="urls", url="memory://urls/bad2/list.csv", url_column="URL")).plan_units()
    with pytest.raises(ValueError, match="column"):  # header-less lists name their columns
        build_reader(CorpusConfig(format="urls", url="memory://urls/bad2/list.csv", list_columns=["caption"])).plan_units()
    with fsspec.open("memory://urls/bad3/broken.parquet", "wb") as f:
        f.write(b"PAR1 not really parquet")
    units, records, skips = read_all(CorpusConfig(format="urls", url="memory://urls/bad3"))
    assert len(units) == 1 and records == [] and skips == Counter({"corrupt_parquet": 1})
    with pytest.raises(ValueError, match="must end in"):
        build_reader(CorpusConfig(format="urls", url="memory://urls/bad/list.csv.gz")).plan_units()


def test_every_fault_is_counted_under_its_reason(server) -> None:
    table = [{"url": server.url("img", "i0"), "caption": "a good one"}]
    table += [{"url": server.url(fault, f"i{1 + n % 5}"), "caption": f"fault {fault}"} for n, fault in enumerate(FAULTS)]
    table += [{"url": "", "caption": "no url"}, {"url": "ftp://example.invalid/x.jpg", "caption": "ftp"}]
    url = "memory://urls/faults/list.jsonl"
    write_list(url, "jsonl", table)
    before = Counter(server.requests)
    units, records, skips = read_all(CorpusConfig(format="urls", url=url, images_per_unit=3, **FAST))
    expected = Counter(FAULT_REASON.values()) + Counter({"missing_url": 1, "bad_url": 1})
    assert skips == expected
    assert set(skips) - {"missing_url"} <= set(DOWNLOAD_FAILURES)
    assert [r.captions for r in records] == [["a good one"], ["fault flaky"]]
    assert records[1].image_bytes == IMAGES["i2"]
    fetched = server.requests - before
    assert fetched[f"/flaky/i2"] == 2  # 500, retried once, then the image
    assert fetched[f"/slow/i3"] == 2 and fetched[f"/404/i1"] == 1  # timeouts retried, 404 not
    assert fetched[f"/html/i5"] == 1 and fetched[f"/truncated/i2"] == 1
    assert any(ua.startswith("ovseg-mine/") for ua in server.user_agents)


def test_opt_out_can_be_switched_off(server) -> None:
    fetcher = Fetcher(FetchPolicy(opt_out=False, read_timeout=1.0))
    assert fetcher.fetch(server.url("noai", "i1")) == IMAGES["i1"]
    with pytest.raises(SkipSample, match="opted_out"):
        Fetcher(FetchPolicy(read_timeout=1.0)).fetch(server.url("noai", "i1"))
    with pytest.raises(SkipSample, match="bad_url"):  # a redirect may not leave http(s)
        Fetcher(FetchPolicy(read_timeout=1.0)).fetch(server.url("tofile", "i1"))
    with pytest.raises(SkipSample, match="too_many_redirects"):
        Fetcher(FetchPolicy(max_redirects=0, read_timeout=1.0)).fetch(server.url("loop", "i1"))


def test_a_refused_connection_is_no_timeout_and_not_retried() -> None:
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(SkipSample) as err:
        Fetcher(FetchPolicy(retries=2, backoff=1.0)).fetch(f"http://127.0.0.1:{port}/x.jpg")
    assert err.value.reason == "connection_error" and time.monotonic() - started < 0.9  # no backoff slept


@pytest.mark.parametrize("values, refused", [
    (["noai"], True), (["noindex, nofollow"], True), (["NoImageAI"], True), (["ovseg-mine: noai"], True),
    (["otherbot: noai"], False), (["nofollow"], False), (["noarchive", "noindex"], True),
    (["unavailable_after: 25 Jun 2010 15:00:00 PST"], False), (["nofollow, unavailable_after: 2010"], False),
    ([], False),
])
def test_robots_tag_directives(values, refused) -> None:
    assert refused_by_robots_tag(values) is refused


def test_magic_bytes() -> None:
    assert is_image_magic(IMAGES["i0"][:16])
    assert not is_image_magic(b"<html><body>")
    assert is_image_magic(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
