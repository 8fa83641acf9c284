"""COCO Captions reader: grouping, unit planning, caption skips, lazy image URLs, sample corpus."""

from __future__ import annotations

import io
import json
import posixpath
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from pipelines.corpus.base import READERS, CorpusConfig, build_reader, load_builtin_readers
from pipelines.corpus.coco import CocoReader
from pipelines.corpus.decode import load_record_image
from pipelines.records import SkipSample, WorkUnit

REPO = Path(__file__).resolve().parents[2]
LONG = " ".join(["tail"] * 25_000)  # 125 kB


def coco_doc() -> dict:
    """5 images listed out of id order; 3 captions on id 7, bad ones on id 3, none on id 9."""
    images = [
        {"id": 9, "file_name": "nine.jpg", "width": 16, "height": 12},
        {"id": 3, "file_name": "sub/three.jpg", "width": 16, "height": 12},
        {"id": 7, "file_name": "seven.jpg", "width": 16, "height": 12, "coco_url": "http://x/7"},
        {"id": 1, "file_name": "one.jpg", "width": 16, "height": 12},
        {"id": 5, "width": 16, "height": 12},  # no file_name -> bad_annotation
    ]
    annotations = [
        {"id": 1, "image_id": 7, "caption": "A dog on a couch."},
        {"id": 2, "image_id": 3, "caption": "   "},
        {"id": 3, "image_id": 7, "caption": "a  dog\nsleeping "},
        {"id": 4, "image_id": 1, "caption": "one"},
        {"id": 5, "image_id": 3, "caption": "lone \ud800 surrogate"},
        {"id": 6, "image_id": 7, "caption": "A brown dog."},
        {"id": 7, "image_id": 3, "caption": LONG},
        {"id": 8, "image_id": 42, "caption": "caption of an unknown image"},
        {"id": 9, "image_id": 5, "caption": "five"},
    ]
    return {"images": images, "annotations": annotations}


def write_corpus(root: str) -> str:
    """Write the json (+ the images of ids 1 and 7) under an fsspec folder; return the json URL."""
    with fsspec.open(f"{root}/captions.json", "w") as f:
        json.dump(coco_doc(), f)
    for name, value in [("one.jpg", 10), ("seven.jpg", 70)]:
        buf = io.BytesIO()
        Image.new("RGB", (16, 12), (value, value, value)).save(buf, "PNG")
        fs, path = fsspec.core.url_to_fs(f"{root}/images/{name}")
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, buf.getvalue())
    return f"{root}/captions.json"


@pytest.fixture(params=["local", "memory"])
def json_url(request, tmp_path) -> str:
    if request.param == "local":
        return write_corpus(str(tmp_path))
    return write_corpus(f"memory://coco_test_{id(tmp_path)}")


def read_all(reader, units: list[WorkUnit]) -> tuple[list, Counter]:
    skips: Counter = Counter()
    return [r for u in units for r in reader.read_unit(u, skips)], skips


def test_registered() -> None:
    assert sorted(load_builtin_readers()) == ["coco", "parquet", "urls", "webdataset"]
    assert READERS["coco"] is CocoReader
    assert isinstance(build_reader(CorpusConfig(format="coco", url="x.json")), CocoReader)
    with pytest.raises(ValueError, match="unknown corpus format"):
        build_reader(CorpusConfig(format="nope", url="x"))


def test_units_partition_images_sorted_by_id(json_url: str) -> None:
    reader = build_reader(CorpusConfig(format="coco", url=json_url, images_per_unit=2))
    units = reader.plan_units()
    assert units == [
        WorkUnit(0, json_url, 0, 2),
        WorkUnit(1, json_url, 2, 4),
        WorkUnit(2, json_url, 4, 5),
    ]
    again = build_reader(CorpusConfig(format="coco", url=json_url, images_per_unit=2))
    assert again.plan_units() == units  # deterministic
    records, _ = read_all(reader, units)
    assert [r.image_id for r in records] == [1, 3, 7, 9]  # id 5 has no file_name
    assert [r.key for r in records] == [f"{i:012d}" for i in (1, 3, 7, 9)]
    first_unit, _ = read_all(reader, units[:1])
    assert [r.image_id for r in first_unit] == [1, 3]


def test_captions_grouped_cleaned_and_counted(json_url: str) -> None:
    reader = build_reader(CorpusConfig(format="coco", url=json_url, max_caption_chars=100))
    records, skips = read_all(reader, reader.plan_units())
    by_id = {r.image_id: r for r in records}
    assert by_id[7].captions == ["A dog on a couch.", "a dog sleeping", "A brown dog."]
    assert by_id[1].captions == ["one"]
    assert by_id[9].captions == []  # kept without captions
    assert len(by_id[3].captions) == 1 and by_id[3].captions[0] == " ".join(["tail"] * 20)
    assert skips == Counter(
        {"caption_empty": 1, "caption_not_utf8": 1, "caption_truncated": 1, "bad_annotation": 1}
    )
    assert by_id[7].source_url == "http://x/7"
    assert by_id[7].meta == {"file_name": "seven.jpg", "width": 16, "height": 12}


def test_image_urls_default_to_json_folder(json_url: str) -> None:
    folder = json_url.rsplit("/", 1)[0]
    reader = build_reader(CorpusConfig(format="coco", url=json_url))
    records, _ = read_all(reader, reader.plan_units())
    assert records[1].image_url == f"{folder}/sub/three.jpg"
    assert all(r.image_bytes is None for r in records)


def test_images_read_lazily_and_missing_file(json_url: str) -> None:
    folder = json_url.rsplit("/", 1)[0]
    cfg = CorpusConfig(format="coco", url=json_url, images_url=f"{folder}/images/")
    records, _ = read_all(build_reader(cfg), build_reader(cfg).plan_units())
    by_id = {r.image_id: r for r in records}
    assert by_id[7].image_url == f"{folder}/images/seven.jpg"
    pixels = load_record_image(by_id[7])
    assert pixels.shape == (12, 16, 3)
    np.testing.assert_array_equal(np.unique(pixels), [70])
    with pytest.raises(SkipSample) as info:
        load_record_image(by_id[9])
    assert info.value.reason == "missing_file"


def test_bundled_sample_corpus() -> None:
    url = str(REPO / "data" / "sample" / "captions_sample.json")
    reader = build_reader(CorpusConfig(format="coco", url=url, images_per_unit=4))
    units = reader.plan_units()
    assert [(u.start, u.stop) for u in units] == [(0, 4), (4, 8), (8, 10)]
    records, skips = read_all(reader, units)
    assert skips == Counter()
    assert [r.image_id for r in records] == list(range(1, 11))
    assert all(3 <= len(r.captions) <= 5 for r in records)
    assert "astronaut" in records[0].captions[0]
    total = 0
    for record in records:
        pixels = load_record_image(record)
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        assert max(pixels.shape[:2]) <= 512
        assert (pixels.shape[0], pixels.shape[1]) == (record.meta["height"], record.meta["width"])
        total += Path(record.image_url).stat().st_size
    assert total < 1_500_000
