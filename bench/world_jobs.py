"""The world benchmarks' shared steps (``bench/world.py``, ``bench/world_proposals.py``): generate the
world corpus once, run a job script, mine the world's train split with the real mining job.

A library module that scripts import (a script never imports a script that imports it back).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from pipelines.world.generate import generate_split

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "assets/world_clip/world_clip.pt"
MINE_CONF = ROOT / "conf/world/mine.yaml"


def ensure_world(world: Path, seed: int, n_train: int, n_val: int) -> None:
    """Generate the corpus unless ``world/world_bench.json`` says it already has these settings."""
    stamp = world / "world_bench.json"
    want = {"seed": seed, "train": n_train, "val": n_val}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    if world.exists():
        shutil.rmtree(world)
    generate_split(world, seed, "train", n_train, formats=("coco",))
    generate_split(world, seed, "val", n_val, formats=("coco", "semseg"))
    stamp.write_text(json.dumps(want))


def run_job(args: list[str], log_path: Path) -> None:
    """Run a job script with this interpreter; its console output goes to ``log_path``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed (exit {proc.returncode}); see {log_path}")


def mine(world: Path, out: Path, name: str, *, backend: str, units: int, checkpoint: Path,
         prompt: str | None = None) -> Path:
    """Run jobs/mine.py on the world's train split into ``out/pairs-<name>``; returns that folder."""
    pairs = out / f"pairs-{name}"
    if pairs.exists():
        shutil.rmtree(pairs)
    ann = world / "coco/annotations"
    run_job(["jobs/mine.py", "--config", str(MINE_CONF),
             f"corpus.url={ann / 'captions_train.json'}", f"corpus.images_url={world / 'coco/train'}",
             f"corpus.images_per_unit={units}", f"proposals.backend={backend}",
             f"proposals.instances_url={ann / 'instances_train.json'}", f"output.url={pairs}",
             f"clip.checkpoint={checkpoint}", *([f"clip.prompt={prompt}"] if prompt else []),
             "output.report=false"], out / f"mine-{name}.log")
    return pairs
