"""No misleading CLIP warnings, and missing weights fail in seconds with one line."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import torch

from ovseg.clip import load_clip
from tests.conftest import REPO


def test_a_model_filled_from_a_checkpoint_logs_no_random_init_warning(tmp_path, caplog):
    path = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(load_clip("ovseg-tiny-vit").model.state_dict(), path)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        bundle = load_clip("ovseg-tiny-vit", checkpoint=str(path))
    assert "initialized randomly" not in caplog.text and "randomly initialised" not in caplog.text
    assert bundle.checkpoint == str(path)
    with caplog.at_level(logging.INFO):  # without weights the warning stays: it is true then
        load_clip("ovseg-tiny-vit")
    assert "randomly" in caplog.text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_preset_without_weights_or_network_fails_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HF_HUB_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")  # an unreachable hub, offline or not
    run = subprocess.run([sys.executable, "jobs/mine.py", "--config", "conf/mine.yaml",
                          f"output.url={tmp_path / 'pairs'}"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)  # "fails fast": the timeout; timings belong in bench/
    assert run.returncode != 0
    err_lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("error:"), run.stderr
    assert "ViT-B-16/openai" in err_lines[0] and "clip.checkpoint" in err_lines[0]
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "pairs").exists()
