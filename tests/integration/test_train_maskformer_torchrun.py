"""Real ``torchrun --nproc_per_node=2`` runs of jobs/train_maskformer.py (gloo on CPU) on a small world:
the loss falls, a stopped run resumes from its checkpoint, and the export loads as a proposal model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ovseg.maskformer.weights import load_maskformer
from pipelines.train import checkpoint as ckpt
from pipelines.train.maskformer_loop import FORMAT
from pipelines.world.generate import generate_split

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_split(root, 11, "train", 16, formats=("coco",))
    return root / "coco"


def torchrun(world: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "jobs" / "train_maskformer.py"), "--config", "conf/world/train_maskformer.yaml",
           f"data.instances_url={world / 'annotations/instances_train.json'}", f"data.images_url={world / 'train'}",
           f"run.out_dir={out}", "data.batch_size=4", "optim.lr=5e-4", "optim.warmup_steps=1",
           "optim.max_steps=14", "run.save_every=5", "run.log_every=1", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


def test_two_process_training_loss_falls_then_resumes_and_exports(world, tmp_path):
    out = tmp_path / "run"
    first = torchrun(world, out, "run.stop_at=10")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 10 and not summary["finished"]
    assert summary["global_batch"] == 8 and summary["unseen"] == ["arrow", "triangle", "house", "umbrella"]
    assert summary["dropped_annotations"]["unseen_category"] > 0 and len(summary["vocabulary"]) == 18
    losses = summary["loss_history"]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [5, 10]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(out), fmt=FORMAT)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["vocabulary"] == summary["vocabulary"]
    assert summary["export"] is None and "export: none" in first.stdout
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    resumed = torchrun(world, out, "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == 10 and summary["step"] == 14 and summary["finished"]
    assert summary["samples_seen"] == 14 * 8
    assert "steps 10 -> 14 of 14" in resumed.stdout and resumed.stdout.count("== train_maskformer") == 1
    model = load_maskformer(summary["export"])
    assert model.train_text_embeddings.shape == (18, 128)  # the world CLIP's text embeddings of the seen names
    payload_meta = torch.load(summary["export"], weights_only=True)["meta"]
    assert payload_meta["vocabulary"] == summary["vocabulary"] and payload_meta["unseen"] == summary["unseen"]
