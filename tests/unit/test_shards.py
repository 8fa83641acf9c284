"""Shard writing, the commit marker, and what counts as committed."""
import json
import tarfile

import pytest
import webdataset as wds

from pipelines.pair_format import shard_url, stats_url
from pipelines.shards import ShardWriter, committed_units, write_sizes


def _sample(key: str) -> dict:
    return {"__key__": key, "txt": b"cat", "json": json.dumps({"noun": "cat"}).encode()}


def test_commit_writes_tar_then_stats_and_reads_back(tmp_path):
    out = str(tmp_path / "pairs")
    w = ShardWriter(out, 3)
    w.write(_sample("u000003_a_000"))
    w.write(_sample("u000003_b_000"))
    assert not (tmp_path / "pairs" / "pairs-000003.tar").exists()  # only the .tmp exists so far
    w.commit({"pairs": 2})
    assert json.loads(open(stats_url(out, 3)).read())["pairs_written"] == 2
    keys = [s["__key__"] for s in wds.WebDataset(shard_url(out, 3), shardshuffle=False)]
    assert keys == ["u000003_a_000", "u000003_b_000"]
    names = tarfile.open(shard_url(out, 3)).getnames()
    # all files of a sample are adjacent in the tar
    assert [n.split(".")[0] for n in names] == ["u000003_a_000"] * 2 + ["u000003_b_000"] * 2
    assert committed_units(out) == {3: {"pairs": 2, "pairs_written": 2}}


def test_aborted_or_unfinished_units_are_not_committed(tmp_path):
    out = str(tmp_path)
    with pytest.raises(RuntimeError):
        with ShardWriter(out, 0) as w:
            w.write(_sample("k0"))
            raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []
    w = ShardWriter(out, 1)
    w.write(_sample("k1"))  # never committed: a killed worker
    (tmp_path / "pairs-000002.tar").write_bytes(b"")  # tar without stats: killed between the two
    assert committed_units(out) == {}


def test_a_new_writer_clears_stale_files_of_its_unit(tmp_path):
    (tmp_path / "pairs-000005.tar").write_bytes(b"junk")
    (tmp_path / "pairs-000005.tar.tmp").write_bytes(b"junk")
    (tmp_path / "pairs-000005.stats.json").write_text("{}")
    w = ShardWriter(str(tmp_path), 5)
    assert not (tmp_path / "pairs-000005.stats.json").exists()
    w.commit({"pairs": 0})
    assert committed_units(str(tmp_path)) == {5: {"pairs": 0, "pairs_written": 0}}


def test_keys_with_dots_are_refused(tmp_path):
    w = ShardWriter(str(tmp_path), 0)
    with pytest.raises(ValueError, match="dots"):
        w.write(_sample("a.b"))
    w.abort()


def test_sizes_json_and_memory_filesystem():
    out = "memory://ovseg-test/pairs"
    w = ShardWriter(out, 0)
    w.write(_sample("x"))
    w.commit({"pairs": 1})
    stats = committed_units(out)
    assert write_sizes(out, stats) == {"pairs-000000.tar": 1}
    import fsspec

    with fsspec.open(out + "/sizes.json") as f:
        assert json.load(f) == {"pairs-000000.tar": 1}
