"""jobs/evaluate.py under torchrun: 2 processes (images sharded, confusion matrices summed) equal one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.test_evaluate_job import make_layout


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_two_processes_equal_one(tmp_path):
    make_layout(tmp_path / "world", "world", n=5, size=40)
    common = ["--config", str(REPO / "conf/smoke/segment.yaml"), f"data.root={tmp_path / 'world'}",
              "proposals.options.max_proposals=6", "eval.overlays=0"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "jobs/evaluate.py", *common, f"output.dir={tmp_path / 'one'}"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "jobs/evaluate.py", *common,
                          f"output.dir={tmp_path / 'two'}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a["images"] == b["images"] == 5 and b["processes"] == 2
    assert [c["gt_pixels"] for c in a["per_class"]] == [c["gt_pixels"] for c in b["per_class"]]
    assert [c["iou"] for c in a["per_class"]] == [c["iou"] for c in b["per_class"]]
    assert (a["mIoU"], a["fwIoU"], a["pixel_acc"]) == (b["mIoU"], b["fwIoU"], b["pixel_acc"])
    assert not (tmp_path / "two" / "overlays").exists()
