"""``torchrun --max-restarts=1``: a rank SIGKILLed mid-epoch, and the run restarts and resumes on its own.

Real torchrun, two gloo ranks on CPU, the tiny CLIP. Once the first checkpoint is on disk, rank 1
is SIGKILLed; torchrun's agent stops rank 0, starts both again (restart 1 of 1), and the new ranks
resume from the newest checkpoint (``run.resume=auto``) and finish. Damaged shards and a damaged
latest checkpoint are tested in-process: tests/unit/test_training_faults.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.train import checkpoint as ckpt
from tests.synthetic_pairs import write_synthetic_pairs
from tests.integration.test_tune_mpt_torchrun import _children, env

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STEPS = 60


def _rank(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [e for e in environ if e.startswith(b"RANK=")]
    return int(found[0][5:]) if found else None


def test_a_killed_rank_is_restarted_by_torchrun_and_resumes_from_the_last_checkpoint(tmp_path):
    # Found here: the restarted ranks read each other's dead addresses from torchrun's store (gloo:
    # connection refused); pipelines/train/dist.py gives every restarted round keys of its own.
    shards = tmp_path / "pairs"
    write_synthetic_pairs(str(shards), n_shards=4, per_shard=24, size=64, seed=7)  # 96 pairs: 12 steps an epoch
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
           str(ROOT / "jobs" / "tune_mpt.py"), "--config", "conf/smoke/tune_mpt.yaml", f"data.urls={shards}",
           f"run.out_dir={out}", f"optim.max_steps={STEPS}", "run.save_every=5", "eval.before=false",
           "eval.max_samples=16", "data.batch_size=4", "data.holdout_percent=0", "run.tensorboard=false"]
    log = tmp_path / "torchrun.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    seen: set[int] = set()
    killed = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            ranks = {_rank(pid): pid for pid in _children(proc.pid)}
            seen.update(ranks.values())
            if ckpt.list_checkpoints(out) and 1 in ranks:
                killed_after = ckpt.list_checkpoints(out)[-1][0]
                os.kill(ranks[1], signal.SIGKILL)
                killed = ranks[1]
                break
            time.sleep(0.05)
        assert killed, "no checkpoint appeared while rank 1 ran: " + log.read_text()[-3000:]
        proc.wait(timeout=600)
    finally:
        for pid in set(_children(proc.pid)) | seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == STEPS
    # restarted on its own, from a checkpoint written at or after the one the kill followed (not step 0)
    assert summary["resumed_from_step"] >= killed_after > 0 and summary["resumed_from_step"] % 5 == 0
    assert summary["resumed_from_step"] < STEPS, "the kill landed after the last step"
    assert summary["resumed_from_step"] % 12 != 0  # mid-epoch: 96 pairs / global batch 8 = 12 steps an epoch
    assert summary["samples_seen"] == STEPS * 8
