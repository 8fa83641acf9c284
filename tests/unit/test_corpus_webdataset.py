"""WebDataset reader: URL expansion, sample grouping, captions from txt/json, damaged tars."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections import Counter

import fsspec
import numpy as np
import pytest
from PIL import Image

from pipelines.corpus.base import CorpusConfig, build_reader
from pipelines.corpus.webdataset import WebDatasetReader, split_member_name
from pipelines.corpus.decode import decode_image
from pipelines.records import WorkUnit

Members = list[tuple[str, bytes]]


def image_bytes(value: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (value, value, value)).save(buf, fmt)
    return buf.getvalue()


def tar_bytes(members: Members, mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def simple_shard(prefix: str, n: int = 3) -> Members:
    """img2dataset layout: ``<key>.jpg``, ``<key>.txt``, ``<key>.json`` per sample."""
    members: Members = []
    for i in range(n):
        key = f"{prefix}{i:04d}"
        meta = {"key": key, "url": f"http://img/{key}.jpg", "status": "success"}
        members += [
            (f"{key}.jpg", image_bytes(10 * i)),
            (f"{key}.txt", f"caption {key}".encode()),
            (f"{key}.json", json.dumps(meta).encode()),
        ]
    return members


def read(url: str, **cfg) -> tuple[list, Counter, list[WorkUnit]]:
    reader = build_reader(CorpusConfig(format="webdataset", url=url, **cfg))
    units = reader.plan_units()
    skips: Counter = Counter()
    return [r for u in units for r in reader.read_unit(u, skips)], skips, units


@pytest.fixture
def shard_dir(tmp_path):
    for shard in (2, 0, 1):  # written out of order on purpose
        (tmp_path / f"shard-{shard:05d}.tar").write_bytes(tar_bytes(simple_shard(f"{shard}")))
    (tmp_path / "notes.txt").write_text("not a shard")
    return tmp_path


def test_split_member_name() -> None:
    assert split_member_name("000123.jpg") == ("000123", "jpg")
    assert split_member_name("a/b/000123.seg.PNG") == ("a/b/000123", "seg.png")
    assert split_member_name("README") == ("README", "")


@pytest.mark.parametrize(
    "pattern", ["shard-{00000..00002}.tar", "shard-*.tar", "", "shard-00001.tar"]
)
def test_plan_units_sorted(shard_dir, pattern: str) -> None:
    url = f"{shard_dir}/{pattern}" if pattern else str(shard_dir)
    units = build_reader(CorpusConfig(format="webdataset", url=url)).plan_units()
    names = [u.source.rsplit("/", 1)[1] for u in units]
    expected = ["shard-00001.tar"] if pattern == "shard-00001.tar" else [
        "shard-00000.tar", "shard-00001.tar", "shard-00002.tar",
    ]  # fmt: skip
    assert names == expected
    assert [u.index for u in units] == list(range(len(expected)))
    assert all(u.start == 0 and u.stop is None for u in units)


def test_reads_img2dataset_shards(shard_dir) -> None:
    records, skips, units = read(f"{shard_dir}/shard-{{00000..00002}}.tar")
    assert skips == Counter()
    assert [r.key for r in records] == [f"{s}{i:04d}" for s in range(3) for i in range(3)]
    first = records[0]
    assert first.captions == ["caption 00000"]
    assert first.source_url == "http://img/00000.jpg"
    assert first.image_id == "00000"
    assert first.meta == {"shard": "shard-00000.tar", "image_ext": "jpg"}
    assert first.image_url is None
    assert np.abs(decode_image(records[2].image_bytes).astype(int) - 20).max() <= 2


def test_memory_urls_and_missing_shard() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/wds_test/s-000.tar", tar_bytes(simple_shard("a", 2)))
    fs.pipe("/wds_test/s-002.tar", tar_bytes(simple_shard("c", 1)))
    records, skips, units = read("memory://wds_test/s-{000..002}.tar")
    assert [u.source for u in units] == [f"memory://wds_test/s-00{i}.tar" for i in range(3)]
    assert [r.key for r in records] == ["a0000", "a0001", "c0000"]
    assert skips == Counter({"missing_shard": 1})


def test_captions_from_txt_and_json_and_bad_members(tmp_path) -> None:
    members: Members = [
        # several captions: txt + json "captions" (duplicate of txt dropped)
        ("k1.webp", image_bytes(1, "WEBP")),
        ("k1.txt", b"a red car\nparked outside"),
        ("k1.json", json.dumps({"captions": ["a car", "a red car parked outside"]}).encode()),
        # no txt: json "caption"; png image
        ("k2.png", image_bytes(2, "PNG")),
        ("k2.json", json.dumps({"caption": "json caption", "url": 5}).encode()),
        # not UTF-8 txt, empty json captions list -> no captions, record kept
        ("k3.jpg", image_bytes(3)),
        ("k3.txt", b"caf\xe9"),
        # no image at all
        ("k4.txt", b"orphan caption"),
        # broken json (sample kept), duplicate jpg (first wins), 100 kB caption
        ("k5.jpg", image_bytes(5)),
        ("k5.jpg", b"second copy"),
        ("k5.json", b"{not json"),
        ("k5.txt", ("word " * 20_000).encode()),
        # metadata members are ignored; dotted folders sanitised into the key
        ("__meta__.json", b"{}"),
        ("sub.dir/k6.jpg", image_bytes(6)),
        ("sub.dir/k6.txt", b"  "),
    ]
    (tmp_path / "one.tar").write_bytes(tar_bytes(members))
    records, skips, _ = read(str(tmp_path / "one.tar"), max_caption_chars=50)
    by_key = {r.key: r for r in records}
    assert list(by_key)[:4] == ["k1", "k2", "k3", "k5"]
    assert by_key["k1"].captions == ["a red car parked outside", "a car"]
    assert by_key["k1"].meta["image_ext"] == "webp"
    assert by_key["k2"].captions == ["json caption"] and by_key["k2"].source_url is None
    assert by_key["k3"].captions == []
    assert by_key["k5"].image_bytes[:2] == b"\xff\xd8"  # the first (real) JPEG
    assert by_key["k5"].captions == [("word " * 10).strip()]
    k6 = [k for k in by_key if k.startswith("sub_dir_k6--h")]
    assert len(k6) == 1 and by_key[k6[0]].captions == []
    assert skips == Counter(
        {
            "caption_not_utf8": 1,
            "missing_image": 1,
            "duplicate_member": 1,
            "bad_json": 1,
            "caption_truncated": 1,
            "caption_empty": 1,
        }
    )


def test_truncated_tar_keeps_complete_samples(tmp_path) -> None:
    data = tar_bytes(simple_shard("t", 4))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        third_jpg = tar.getmember("t0002.jpg")
        fourth_txt = tar.getmember("t0003.txt")
    cuts = {
        "in_data": third_jpg.offset_data + 100,  # inside the 3rd image
        "at_header": fourth_txt.offset,  # exactly before a header
        "in_header": fourth_txt.offset + 100,  # inside a header
    }
    for name, cut in cuts.items():
        (tmp_path / f"{name}.tar").write_bytes(data[:cut])
    expected = {"in_data": 2, "at_header": 3, "in_header": 3}
    for name, n_complete in expected.items():
        records, skips, _ = read(str(tmp_path / f"{name}.tar"))
        # the sample being read when the data stopped is dropped: it may be incomplete
        assert [r.key for r in records] == [f"t{i:04d}" for i in range(n_complete)], name
        assert skips == Counter({"truncated_tar": 1}), name


def test_gzip_tar_and_truncated_gzip(tmp_path) -> None:
    plain = tar_bytes(simple_shard("g", 3))
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        cut = tar.getmember("g0001.txt").offset_data + 1
    (tmp_path / "a_ok.tar.gz").write_bytes(gzip.compress(plain, mtime=0))
    (tmp_path / "b_tar_cut.tgz").write_bytes(gzip.compress(plain[:cut], mtime=0))
    records, skips, units = read(str(tmp_path))
    assert [u.source.rsplit("/", 1)[1] for u in units] == ["a_ok.tar.gz", "b_tar_cut.tgz"]
    assert [r.key for r in records] == ["g0000", "g0001", "g0002", "g0000"]
    assert skips == Counter({"truncated_tar": 1})
    # a gzip stream cut inside the samples: a prefix of them, one truncated_tar
    packed = gzip.compress(plain, mtime=0)
    (tmp_path / "a_ok.tar.gz").unlink()
    for keep in (len(packed) - 40, len(packed) // 2, 30):
        (tmp_path / "b_tar_cut.tgz").write_bytes(packed[:keep])
        records, skips, _ = read(str(tmp_path))
        keys = [r.key for r in records]
        assert keys == ["g0000", "g0001", "g0002"][: len(keys)] and len(keys) < 3
        assert skips == Counter({"truncated_tar": 1})


def test_corrupt_and_empty_tars(tmp_path) -> None:
    (tmp_path / "a.tar").write_bytes(b"this is not a tar file" * 50)
    (tmp_path / "b.tar").write_bytes(b"")
    records, skips, _ = read(str(tmp_path))
    assert records == []
    assert skips == Counter({"corrupt_tar": 1, "truncated_tar": 1})


def test_reader_class() -> None:
    reader = build_reader(CorpusConfig(format="webdataset", url="x.tar"))
    assert isinstance(reader, WebDatasetReader)
    assert reader.plan_units() == [WorkUnit(0, "x.tar")]
