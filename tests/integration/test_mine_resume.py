"""A mining run SIGKILLed midway (driver and Ray, no clean-up) and resumed gives exactly the pairs
of an uninterrupted run: every member of every pair equal, no pair twice."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pipelines.pairs.writer import committed_units
from tests.integration.conftest import REPO, child_env, mine_cmd
from tests.integration.pair_digests import pair_set
from tests.integration.processes import kill_session, sigkill_session, start_session

pytestmark = pytest.mark.integration
UNITS = 30


def _overrides(corpus: Path, out: Path) -> list[str]:
    return [f"corpus.url={corpus}", f"corpus.images_url={REPO / 'data' / 'sample'}", f"output.url={out}",
            "corpus.images_per_unit=1", "run.images_per_batch=1", "ray.num_actors=1", "output.report=false"]


def test_killed_run_resumes_to_the_same_pairs(repeated_sample, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    subprocess.run(mine_cmd(*_overrides(repeated_sample, full)), check=True, env=child_env(), cwd=REPO,
                   capture_output=True, timeout=600)
    assert len(committed_units(str(full))) == UNITS

    proc = start_session(mine_cmd(*_overrides(repeated_sample, resumed)), tmp_path / "killed.log", child_env(), str(REPO))
    try:
        deadline = time.time() + 300
        while len(committed_units(str(resumed))) < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        sigkill_session(proc.pid)  # the driver and the Ray it started at once: a crash, not a shutdown
    finally:
        kill_session(proc.pid)
    done_before = committed_units(str(resumed))
    assert 0 < len(done_before) < UNITS, f"kill did not land midway ({len(done_before)} units)"
    # whatever the kill left behind, nothing uncommitted looks complete
    for tar in resumed.glob("pairs-*.tar"):
        index = int(tar.name[6:12])
        assert index in done_before or not (resumed / f"pairs-{index:06d}.stats.json").exists()

    run = subprocess.run(mine_cmd(*_overrides(repeated_sample, resumed)), env=child_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"{UNITS - len(done_before)} units to mine, {len(done_before)} already committed" in run.stdout
    after = committed_units(str(resumed))
    assert len(after) == UNITS
    for index, stats in done_before.items():  # committed units were skipped, not redone
        assert after[index]["worker"] == stats["worker"]
    assert pair_set(str(resumed)) == pair_set(str(full))
    assert not list(resumed.glob("*.tmp"))


def _actor_pids(sid: int) -> list[int]:
    from tests.integration.processes import session_pids

    pids = []
    for pid in session_pids(sid):
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"ray::MiningActor"):
                pids.append(pid)
        except OSError:
            pass
    return pids


def test_a_killed_actor_is_restarted_and_its_unit_retried(repeated_sample, tmp_path):
    import os
    import signal

    out = tmp_path / "pairs"
    proc = start_session(mine_cmd(*_overrides(repeated_sample, out)), tmp_path / "run.log", child_env(), str(REPO))
    try:
        deadline = time.time() + 300
        while len(committed_units(str(out))) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        victims = _actor_pids(proc.pid)
        assert victims, "no mining actor process found"
        os.kill(victims[0], signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        kill_session(proc.pid)
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert len(committed_units(str(out))) == UNITS
    assert "0 failed" in log
    assert len({s["worker"] for s in committed_units(str(out)).values()}) == 2  # the restarted actor is a new process
