"""Faults a tuning run meets on its own: damaged pair shards, a damaged latest checkpoint.

In-process runs (one process, tiny random CLIP, a few steps each). The killed-rank restart under
``torchrun --max-restarts`` is in tests/integration/test_training_faults.py.
"""
from __future__ import annotations

import tarfile

import pytest

from pipelines.config.load import load_config
from pipelines.pairs.format import shard_url, stats_url
from pipelines.train import checkpoint as ckpt
from pipelines.train.config import TuneConfig
from pipelines.train.dist import init_world
from pipelines.train.loop import run
from tests.synthetic_pairs import write_synthetic_pairs

SMOKE = "conf/smoke/tune_mpt.yaml"


def config(*overrides: str) -> TuneConfig:
    return load_config(TuneConfig, SMOKE, ["run.tensorboard=false", "eval.before=false", "data.batch_size=4",
                                           "data.holdout_percent=0", "eval.max_samples=8", *overrides])


def _member_offsets(path) -> list[int]:
    with tarfile.open(path) as tar:
        return [m.offset for m in tar.getmembers()]


def test_truncated_and_corrupt_shards_are_skipped_and_counted(tmp_path):
    """Shards without commit markers (copied from elsewhere): one cut inside a member, one cut at a
    member boundary, one not a tar at all. Training runs on the good one and counts the rest."""
    out = tmp_path / "pairs"
    write_synthetic_pairs(str(out), n_shards=4, per_shard=8, size=64, seed=2)
    for index in range(4):
        (out / f"pairs-{index:06d}.stats.json").unlink()
    inside, boundary = shard_url(str(out), 1), shard_url(str(out), 2)
    offsets, data = _member_offsets(inside), open(inside, "rb").read()
    open(inside, "wb").write(data[: offsets[5] + 700])  # cut in the 6th member's data
    offsets, data = _member_offsets(boundary), open(boundary, "rb").read()
    open(boundary, "wb").write(data[: offsets[8]])  # cut at the 9th member's header
    open(shard_url(str(out), 3), "wb").write(b"\x00garbage" * 999)
    summary = run(config(f"data.urls={out}", f"run.out_dir={tmp_path / 'run'}", "optim.max_steps=4",
                         "run.save_every=4", "data.shuffle_buffer=0"), init_world("cpu"))
    assert summary["finished"] and summary["step"] == 4
    # No shuffle buffer, so the stream reads only what the 4 steps of 4 take: 16 samples. A pass over
    # the shards gives 11 (shard 0: 8, shard 1: 1 before the cut, shard 2: 2) and counts one
    # shard_error each for shards 1 and 3, one truncated_shard for shard 2 and one missing_field
    # (shard 1's partial sample). Pass 2 (seeded order 3, 1, 2, 0) meets every broken shard before
    # shard 0 gives the last 2 samples: each count twice. Found by this test: counts of the shard
    # readers after the first batch were lost (the stream swapped its counter for a new one).
    assert summary["skipped"] == {"shard_error": 4, "truncated_shard": 2, "missing_field": 2}


def test_a_committed_shard_cut_after_its_commit_is_left_out(tmp_path):
    out = tmp_path / "pairs"
    write_synthetic_pairs(str(out), n_shards=2, per_shard=8, size=64, seed=2)
    cut = shard_url(str(out), 1)
    data = open(cut, "rb").read()
    open(cut, "wb").write(data[:3000])
    from pipelines.pairs.stream import make_source

    assert make_source(str(out)).shards == (shard_url(str(out), 0),)
    assert stats_url(str(out), 1)  # the marker is still there: the size check, not its absence, decides


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped_byte":
        data[len(data) // 2] ^= 0x01  # still a loadable zip: only the digest can tell
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    if how == "no_digest_truncated":
        ckpt.digest_path(path).unlink()  # a checkpoint from before digests: the load itself fails


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "no_digest_truncated"])
def test_load_latest_intact_skips_damaged_checkpoints(tmp_path, damage):
    import torch

    for step in (2, 4, 6):
        ckpt.save_checkpoint({"format": ckpt.FORMAT, "step": step, "w": torch.arange(5000.0) * step},
                             ckpt.checkpoint_path(tmp_path, step))
    for step in (4, 6):
        _damage(ckpt.checkpoint_path(tmp_path, step), damage)
    path, state, damaged = ckpt.load_latest_intact(tmp_path)
    assert path == ckpt.checkpoint_path(tmp_path, 2) and state["step"] == 2
    assert [p for p, _ in damaged] == [ckpt.checkpoint_path(tmp_path, 6), ckpt.checkpoint_path(tmp_path, 4)]
    _damage(ckpt.checkpoint_path(tmp_path, 2), damage)
    assert ckpt.load_latest_intact(tmp_path) is None


def test_a_run_resumes_from_the_checkpoint_before_a_damaged_latest_one(tmp_path):
    out = tmp_path / "run"
    common = [f"data.urls={tmp_path / 'pairs'}", f"run.out_dir={out}", "optim.max_steps=6", "run.save_every=2",
              "run.keep_last=3"]
    write_synthetic_pairs(str(tmp_path / "pairs"), n_shards=2, per_shard=8, size=64, seed=4)
    first = run(config(*common, "run.stop_at=4"), init_world("cpu"))
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2, 4] and first["step"] == 4
    latest = ckpt.checkpoint_path(out, 4)
    _damage(latest, "flipped_byte")
    second = run(config(*common), init_world("cpu"))
    assert second["resumed_from_step"] == 2 and second["step"] == 6 and second["finished"]
    assert second["damaged_checkpoints"] == [str(latest)]
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(out, 6))["step"] == 6
