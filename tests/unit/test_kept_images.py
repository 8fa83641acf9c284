"""Kept images (output.keep_images): img2dataset-style tar + parquet + stats that the WebDataset
reader reads back as the same records; shrinking; nothing left by an aborted unit."""
from __future__ import annotations

import io
import json
from collections import Counter

import pyarrow.parquet as pq
from PIL import Image

from pipelines.corpus.base import CorpusConfig, build_reader
from pipelines.mine.kept_images import ImageKeeper, images_url_of
from pipelines.records import ImageRecord


def encoded(size: tuple[int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


def records() -> list[ImageRecord]:
    return [ImageRecord("big", ["a red wall", "a wall"], encoded((64, 32), "JPEG"), source_url="http://x/big.jpg",
                        image_id="big", meta={"extra": {"w": 64}}),
            ImageRecord("small", ["a red square"], encoded((16, 16), "PNG"), source_url="http://x/small.png",
                        image_id="small")]


def test_kept_images_read_back_as_the_same_records(tmp_path) -> None:
    out = images_url_of(str(tmp_path / "pairs"), None)
    assert out == str(tmp_path / "pairs_images")
    keeper = ImageKeeper(out, 3, max_side=32)
    for record in records():
        keeper.add(record)
    keeper.commit(Counter({"http_404": 2, "caption_empty": 1}), 1.5)
    stats = json.loads((tmp_path / "pairs_images" / "00003_stats.json").read_text())
    assert stats["status_dict"] == {"success": 2, "http_404": 2} and stats["count"] == 4
    rows = pq.read_table(tmp_path / "pairs_images" / "00003.parquet").to_pylist()
    assert [(r["key"], r["width"], r["height"]) for r in rows] == [("big", 32, 16), ("small", 16, 16)]
    reader = build_reader(CorpusConfig(format="webdataset", url=out))
    skips: Counter = Counter()
    [unit] = reader.plan_units()
    back = list(reader.read_unit(unit, skips))
    assert not skips
    assert [(r.key, r.captions, r.source_url, r.image_id) for r in back] == [
        (r.key, r.captions, r.source_url, r.image_id) for r in records()]
    assert Image.open(io.BytesIO(back[0].image_bytes)).size == (32, 16)  # shrunk, re-encoded
    assert back[1].image_bytes == records()[1].image_bytes and back[1].meta["image_ext"] == "png"  # as fetched


def test_an_aborted_unit_leaves_no_tar(tmp_path) -> None:
    keeper = ImageKeeper(str(tmp_path / "imgs"), 0)
    keeper.add(records()[1])
    keeper.abort()
    keeper.abort()  # idempotent
    assert list((tmp_path / "imgs").iterdir()) == []
