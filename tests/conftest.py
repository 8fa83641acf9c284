"""Fixtures shared by unit and integration tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_shards(tmp_path_factory) -> Path:
    """Pair shards written by the real mining job with ``conf/smoke/mine.yaml`` (local Ray).

    Returns the output folder (``pairs-%06d.tar``, stats files, ``sizes.json``).
    """
    out = tmp_path_factory.mktemp("smoke") / "pairs"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run([sys.executable, str(REPO / "jobs" / "mine.py"), "--config", str(REPO / "conf/smoke/mine.yaml"),
                          f"output.url={out}", "output.report=false"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (out.parent / "mine.log").write_text(run.stdout + run.stderr)  # tests/integration/test_quiet_runs.py
    return out
