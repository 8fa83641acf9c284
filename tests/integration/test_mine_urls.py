"""The mining job on a URL list (``corpus.format=urls``): a SIGKILLed driver resumes without
fetching any committed unit's image twice, the report shows the download success rate, and URL
lists are read from moto's S3. All image traffic goes to a loopback server this test starts."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.corpus.base import CorpusConfig, build_reader
from pipelines.pairs.writer import committed_units
from tests.image_server import ImageServer
from tests.integration.conftest import REPO, child_env, mine_cmd
from tests.integration.processes import kill_session, sigkill_session, start_session

pytestmark = pytest.mark.integration
SAMPLE = REPO / "data" / "sample"


def _sample() -> tuple[dict[str, bytes], list[dict]]:
    """``(images by key, rows)``: the 10 sample photos, their captions, keys = file stems."""
    coco = json.loads((SAMPLE / "captions_sample.json").read_text())
    captions: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        captions.setdefault(ann["image_id"], []).append(ann["caption"])
    images = {Path(im["file_name"]).stem: (SAMPLE / im["file_name"]).read_bytes() for im in coco["images"]}
    rows = [{"key": Path(im["file_name"]).stem, "caption": captions[im["id"]][0]} for im in coco["images"]]
    return images, rows


def _csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["url", "caption", "key"])
        w.writeheader()
        w.writerows(rows)


def test_killed_driver_resumes_without_fetching_committed_units_again(tmp_path):
    images, rows = _sample()
    with ImageServer(images, delay_s=0.3) as server:
        table = [dict(r, url=server.url("img", r["key"])) for r in rows]
        table.insert(4, {"key": "gone", "caption": "a missing photo", "url": server.url("404", "cat")})
        listing = tmp_path / "list.csv"
        _csv(listing, table)
        out = tmp_path / "pairs"
        overrides = ["corpus.format=urls", f"corpus.url={listing}", "corpus.key_column=key",
                     "corpus.images_per_unit=1", "run.images_per_batch=1", "ray.num_actors=1",
                     f"output.url={out}", "output.keep_images=true"]
        proc = start_session(mine_cmd(*overrides, "output.report=false"), tmp_path / "killed.log", child_env(),
                             str(REPO))
        try:
            deadline = time.time() + 300
            while len(committed_units(str(out))) < 3 and time.time() < deadline and proc.poll() is None:
                time.sleep(0.05)
            sigkill_session(proc.pid)  # the driver and its Ray at once: a crash, no clean-up
        finally:
            kill_session(proc.pid)
        before = committed_units(str(out))
        assert 0 < len(before) < len(table), f"kill did not land midway ({len(before)} units)"
        fetched_before = Counter(server.requests)

        run = subprocess.run(mine_cmd(*overrides), env=child_env(), cwd=REPO, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert f"{len(table) - len(before)} units to mine, {len(before)} already committed" in run.stdout
        fetched = Counter(server.requests)
    assert sorted(committed_units(str(out))) == list(range(len(table)))
    for index in before:  # a committed unit's image was fetched once, by the killed run, never again
        path = "/" + table[index]["url"].split("/", 3)[3]
        assert fetched_before[path] == fetched[path] == 1, (index, path)
    report = json.loads((out / "report.json").read_text())
    downloads = report["downloads"]
    assert downloads["failed"] == {"http_404": 1} and downloads["downloaded"] == len(rows)
    assert downloads["success_rate"] == pytest.approx(len(rows) / (len(rows) + 1))
    assert "- downloads: 90.9% succeeded (10 of 11 URLs; failed: http_404 1)" in (out / "report.md").read_text()
    kept = tmp_path / "pairs_images"
    assert sorted(p.name for p in kept.glob("*.tar")) == [f"{i:05d}.tar" for i in range(len(table))]
    assert json.loads((kept / "00004_stats.json").read_text())["status_dict"] == {"success": 0, "http_404": 1}


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_url_lists_are_read_from_s3(s3, kind, tmp_path):
    images, rows = _sample()
    with ImageServer(images) as server:
        table = [dict(r, url=server.url("img", r["key"])) for r in rows]
        local = tmp_path / "lists"
        local.mkdir()
        if kind == "parquet":
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(table), buf, row_group_size=3)
            (local / "part-0.parquet").write_bytes(buf.getvalue())
        else:
            _csv(local / "part-0.csv", table)
        url = s3.put_dir(local, f"lists/{kind}")
        cfg = CorpusConfig(format="urls", url=url, key_column="key", images_per_unit=4,
                           storage_options=s3.storage_options)
        reader = build_reader(cfg)
        units = reader.plan_units()
        skips: Counter = Counter()
        records = [r for u in units for r in reader.read_unit(u, skips)]
        reader.close()
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 8), (8, 10)]
    assert all(u.source.startswith("s3://") for u in units)
    assert [r.key for r in records] == [r["key"] for r in rows] and not skips
    assert [r.image_bytes for r in records] == [images[r["key"]] for r in rows]
