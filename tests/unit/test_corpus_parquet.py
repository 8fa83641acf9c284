"""Parquet reader: footer-only planning, row grouping across units, image/caption column kinds."""

from __future__ import annotations

import io
from collections import Counter

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.corpus.base import CorpusConfig, build_reader
from pipelines.corpus.parquet import ParquetReader
from pipelines.corpus.decode import load_record_image
from pipelines.records import SkipSample, WorkUnit

IDS = [1, 1, 2, 3, 3, 3, 4, 5, 5, 6]  # one row per caption, rows of one image adjacent


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value, value)).save(buf, "PNG")
    return buf.getvalue()


def write_table(url: str, table: pa.Table, row_group_size: int = 3) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    with fsspec.open(url, "wb") as f:
        f.write(buf.getvalue())


def caption_rows() -> pa.Table:
    return pa.table(
        {
            "image": [png(10 * i) for i in IDS],
            "caption": [f"c{row}" for row in range(len(IDS))],
            "image_id": IDS,
            "url": [f"http://img/{i}" for i in IDS],
        }
    )


def read(cfg: CorpusConfig, units: list[WorkUnit] | None = None):
    reader = build_reader(cfg)
    units = reader.plan_units() if units is None else units
    skips: Counter = Counter()
    per_unit = [list(reader.read_unit(u, skips)) for u in units]
    return per_unit, skips, units


@pytest.fixture
def grouped_url() -> str:
    url = "memory://pq_test/grouped/part-0.parquet"
    write_table(url, caption_rows())
    return url


@pytest.mark.parametrize("images_per_unit", [1, 2, 3, 4, 10, 100])
def test_groups_are_whole_and_read_once(grouped_url: str, images_per_unit: int) -> None:
    cfg = CorpusConfig(
        format="parquet", url=grouped_url, id_column="image_id", images_per_unit=images_per_unit
    )
    per_unit, skips, units = read(cfg)
    n_units = -(-len(IDS) // images_per_unit)
    assert [(u.index, u.start, u.stop) for u in units] == [
        (i, i * images_per_unit, min((i + 1) * images_per_unit, len(IDS))) for i in range(n_units)
    ]
    records = [r for unit in per_unit for r in unit]
    assert [r.key for r in records] == ["1", "2", "3", "4", "5", "6"]
    assert [r.captions for r in records] == [
        ["c0", "c1"], ["c2"], ["c3", "c4", "c5"], ["c6"], ["c7", "c8"], ["c9"],
    ]  # fmt: skip
    assert [r.image_id for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[2].source_url == "http://img/3"
    assert records[2].meta == {"file": "part-0.parquet", "row": 3}
    np.testing.assert_array_equal(np.unique(load_record_image(records[2])), [30])
    assert skips == Counter()


def test_group_placement_with_two_rows_per_unit(grouped_url: str) -> None:
    cfg = CorpusConfig(format="parquet", url=grouped_url, id_column="image_id", images_per_unit=2)
    per_unit, _, _ = read(cfg)
    # a run belongs to the unit where it starts; units inside a run yield nothing
    keys = [[r.key for r in unit] for unit in per_unit]
    assert keys == [["1"], ["2", "3"], [], ["4", "5"], ["6"]]


def test_rows_without_grouping_and_plan_over_files() -> None:
    for name, n in [("b.parquet", 3), ("a.parquet", 5)]:  # written out of order
        table = pa.table({"image": [png(i) for i in range(n)], "caption": ["x"] * n})
        write_table(f"memory://pq_test/many/{name}", table, row_group_size=2)
    cfg = CorpusConfig(format="parquet", url="memory://pq_test/many", images_per_unit=2)
    per_unit, _, units = read(cfg)
    assert [(u.source.rsplit("/", 1)[1], u.start, u.stop) for u in units] == [
        ("a.parquet", 0, 2), ("a.parquet", 2, 4), ("a.parquet", 4, 5),
        ("b.parquet", 0, 2), ("b.parquet", 2, 3),
    ]  # fmt: skip
    assert [u.index for u in units] == [0, 1, 2, 3, 4]
    keys = [r.key for unit in per_unit for r in unit]
    assert keys == [f"a_{i:09d}" for i in range(5)] + [f"b_{i:09d}" for i in range(3)]
    assert per_unit[2][0].image_id == 4


def test_struct_images_list_captions_and_paths(tmp_path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "p.png").write_bytes(png(77))
    table = pa.table(
        {
            "image": [
                {"bytes": png(5), "path": "ignored.png"},  # Hugging Face Image feature
                {"bytes": None, "path": "imgs/p.png"},  # bytes missing -> path next to file
                {"bytes": None, "path": None},  # nothing -> missing_image
                {"bytes": b"", "path": None},  # empty bytes are kept; decoding says zero_byte
            ],
            "caption": [["a dog", "a  dog", "a puppy"], ["x" * 300], [], ["\u00ff"]],
            "key": ["k.1", "k2", "k3", "k4"],
        }
    )
    write_table(str(tmp_path / "d.parquet"), table)
    cfg = CorpusConfig(
        format="parquet", url=str(tmp_path / "*.parquet"), key_column="key", max_caption_chars=100
    )
    per_unit, skips, _ = read(cfg)
    records = per_unit[0]
    assert [r.key for r in records] == ["k_1--h" + records[0].key[-16:], "k2", "k4"]
    assert records[0].captions == ["a dog", "a puppy"] and records[0].image_bytes == png(5)
    assert records[1].image_bytes is None
    assert records[1].image_url == f"{tmp_path}/imgs/p.png"
    np.testing.assert_array_equal(np.unique(load_record_image(records[1])), [77])
    assert records[1].captions == ["x" * 100]
    assert records[2].image_bytes == b"" and records[2].captions == ["\u00ff"]
    assert records[0].image_id == "k.1"
    assert skips == Counter({"missing_image": 1, "caption_truncated": 1})


def test_image_path_column_and_bad_captions() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/pq_test/paths/img/a.png", png(1))
    table = pa.table(
        {
            "file": ["img/a.png", "memory://pq_test/paths/img/a.png", None],
            "text": ["  ", None, "z " * 60_000],
        }
    )
    write_table("memory://pq_test/paths/meta/p.parquet", table)
    cfg = CorpusConfig(
        format="parquet",
        url="memory://pq_test/paths/meta/p.parquet",
        image_path_column="file",
        caption_column="text",
    )
    per_unit, skips, _ = read(cfg)
    relative, absolute = per_unit[0]
    assert relative.image_url == "memory://pq_test/paths/meta/img/a.png"  # next to the parquet
    assert absolute.image_url == "memory://pq_test/paths/img/a.png"
    with pytest.raises(SkipSample) as info:
        load_record_image(relative)
    assert info.value.reason == "missing_file"
    np.testing.assert_array_equal(np.unique(load_record_image(absolute)), [1])
    assert [r.captions for r in per_unit[0]] == [[], []]
    assert skips == Counter({"caption_empty": 2, "missing_image": 1})


def test_missing_column_is_a_config_error(grouped_url: str) -> None:
    with pytest.raises(ValueError, match="nope"):
        cfg = CorpusConfig(format="parquet", url=grouped_url, caption_column="nope")
        build_reader(cfg).plan_units()
    with pytest.raises(ValueError, match="id"):
        build_reader(CorpusConfig(format="parquet", url=grouped_url, key_column="id")).plan_units()


def test_corrupt_and_missing_files() -> None:
    buf = io.BytesIO()
    pq.write_table(caption_rows(), buf)
    fs = fsspec.filesystem("memory")
    fs.pipe("/pq_test/bad/a.parquet", buf.getvalue()[:-100])  # footer cut off
    fs.pipe("/pq_test/bad/b.parquet", b"PAR1 random junk")
    cfg = CorpusConfig(format="parquet", url="memory://pq_test/bad/*.parquet")
    per_unit, skips, units = read(cfg)
    assert [(u.start, u.stop) for u in units] == [(0, None), (0, None)]  # counted when read
    assert per_unit == [[], []]
    assert skips == Counter({"corrupt_parquet": 2})
    ghost = [WorkUnit(0, "memory://pq_test/bad/ghost.parquet", 0, 10)]
    assert read(cfg, ghost)[1] == Counter({"missing_shard": 1})


def test_reader_class(grouped_url: str) -> None:
    assert isinstance(build_reader(CorpusConfig(format="parquet", url=grouped_url)), ParquetReader)
