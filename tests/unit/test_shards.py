"""Shard writing, the commit marker, and what counts as committed."""
import hashlib
import json
import tarfile

import pytest
import webdataset as wds

from pipelines.pairs.format import shard_url, stats_url
from pipelines.pairs.writer import ShardWriter, committed_units, write_sizes


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
    tar_bytes = (tmp_path / "pairs" / "pairs-000003.tar").read_bytes()
    assert committed_units(out) == {3: {"pairs": 2, "pairs_written": 2, "tar_bytes": len(tar_bytes),
                                        "tar_sha256": hashlib.sha256(tar_bytes).hexdigest()}}


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
    stats = committed_units(str(tmp_path))[5]
    assert (stats["pairs"], stats["pairs_written"], stats["tar_bytes"]) == (0, 0, 10240)  # an empty tar: end blocks


def test_a_tar_that_differs_from_its_marker_is_not_committed(tmp_path):
    """Object stores have no atomic rename: a tar replaced or cut after its marker was written is
    not taken for committed, neither by the resume check nor by the pair readers."""
    from pipelines.pairs.format import committed_shards, verify_shard

    out = str(tmp_path)
    for index in (0, 1, 2):
        w = ShardWriter(out, index)
        w.write(_sample(f"u{index:06d}_a_000"))
        w.commit({"pairs": 1})
    assert [verify_shard(out, i) for i in (0, 1, 2)] == [None, None, None]
    tar1 = tmp_path / "pairs-000001.tar"
    tar1.write_bytes(tar1.read_bytes()[:-1024])  # cut
    tar2 = tmp_path / "pairs-000002.tar"
    data = bytearray(tar2.read_bytes())
    data[600] ^= 0xFF  # same size, one byte flipped: only the full check sees it
    tar2.write_bytes(bytes(data))
    assert sorted(committed_units(out)) == [0, 2]
    assert committed_shards([shard_url(out, i) for i in (0, 1, 2)]) == [shard_url(out, 0), shard_url(out, 2)]
    assert verify_shard(out, 1).startswith("size") and verify_shard(out, 2) == "SHA-256 differs from the marker's"


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
