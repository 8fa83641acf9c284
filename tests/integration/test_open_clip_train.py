"""open_clip's own trainer (`open_clip_train`) trains on the mined shards as they are."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

TRAIN = "import sys, ovseg.clip; from open_clip_train.main import main; main(sys.argv[1:])"


def test_open_clip_train_runs_an_epoch_on_mined_shards(smoke_shards, tmp_path):
    sizes = json.loads((smoke_shards / "sizes.json").read_text())
    last = len(sizes) - 1
    n = sum(sizes.values())
    cmd = [sys.executable, "-c", TRAIN, "--train-data", f"{smoke_shards}/pairs-{{000000..{last:06d}}}.tar",
           "--dataset-type", "webdataset", "--train-num-samples", str(n), "--model", "ovseg-tiny-vit",
           "--epochs", "1", "--batch-size", "8", "--workers", "0", "--lr", "1e-4", "--warmup", "1",
           "--logs", str(tmp_path), "--name", "octrain", "--save-frequency", "1", "--log-every-n-steps", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = (tmp_path / "octrain" / "out.log").read_text()
    assert "(100%)]" in log
    assert "Contrastive_loss" in log
    assert (tmp_path / "octrain" / "checkpoints" / "epoch_1.pt").stat().st_size > 100_000
