"""Real ``torchrun --nproc_per_node=2`` runs of jobs/tune_mpt.py (gloo on CPU) on pair shards."""
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

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Pair shards in the mining output format (3 committed units + sizes.json)."""
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    write_synthetic_pairs(str(out), n_shards=3, per_shard=24, size=64, seed=5)
    return out


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> Path:
    """What ``jobs/mine.py --config conf/smoke/mine.yaml`` writes (tiny CLIP, local Ray)."""
    out = tmp_path_factory.mktemp("mined") / "pairs"
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "mine.py"), "--config", "conf/smoke/mine.yaml",
                           f"output.url={out}"], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "sizes.json").exists()
    return out


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(ROOT / "jobs" / "tune_mpt.py"), "--config", "conf/smoke/tune_mpt.yaml",
            "run.tensorboard=true", *args]


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_two_process_gloo_run_on_mined_shards(mined, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(torchrun(f"data.urls={mined}", f"run.out_dir={out}", "optim.max_steps=4",
                                   "run.save_every=2", "eval.max_samples=32"),
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["finished"] and summary["step"] == 4
    assert summary["global_batch"] == 16 and summary["samples_seen"] == 64
    assert summary["eval_before"]["samples"] > 0 and summary["eval_after"]["samples"] > 0
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2, 4]
    assert Path(summary["exports"]["prompt"]).exists() and Path(summary["exports"]["ovseg"]).exists()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "eval before:" in proc.stdout and "eval after:" in proc.stdout  # rank 0 summary, once
    assert proc.stdout.count("== tune_mpt") == 1


def test_kill_after_checkpoint_then_resume(shards, tmp_path):
    out = tmp_path / "run"
    common = [f"data.urls={shards}", f"run.out_dir={out}", "optim.max_steps=400", "run.save_every=2",
              "eval.before=false", "data.batch_size=4"]
    proc = subprocess.Popen(torchrun(*common), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not ckpt.list_checkpoints(out) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert ckpt.list_checkpoints(out), "no checkpoint appeared"
    finally:  # hard kill: torchrun's workers run in their own sessions, kill them by pid first
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=30)
    time.sleep(1.0)
    killed_at = ckpt.list_checkpoints(out)[-1][0]
    assert killed_at < 400
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(out))
    assert state["world_size"] == 2 and len(state["rng"]) == 2

    resumed = subprocess.run(torchrun(*common, f"run.stop_at={killed_at + 2}", "resume=auto"),
                             cwd=ROOT, env=env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == killed_at and summary["step"] == killed_at + 2
    assert summary["samples_seen"] == (killed_at + 2) * 8
    assert f"steps {killed_at} -> {killed_at + 2} of 400" in resumed.stdout


def test_ranks_without_storage_credentials_print_one_line(tmp_path):
    """Issue 18, case 6: 8 ranks without S3 credentials printed 773 lines (a NoCredentialsError and
    s3fs warnings per rank). Rank 0 probes the storage once and alone prints the error line; the
    rest is torchrun's own failure summary, which names rank 0 and exit code 2."""
    from tests.unit.test_startup_errors import no_credentials_env

    proc = subprocess.run(torchrun("data.urls=s3://bucket/pairs", f"run.out_dir={tmp_path / 'run'}"), cwd=ROOT,
                          env=dict(no_credentials_env(), OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert errors == ["error: data.urls=s3://bucket/pairs: no usable credentials for s3:// (Unable to locate "
                      "credentials); set them in the environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), "
                      "the provider's config file, or data.storage_options"], text[-3000:]
    assert "NoCredentialsError" not in text and "botocore" not in text and "s3fs" not in text
    assert "rank      : 0 (local_rank: 0)\n  exitcode  : 2" in text, text[-3000:]  # rank 0 is the root cause
    assert not (tmp_path / "run").exists()
