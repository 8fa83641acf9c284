"""The world mining the world benches share: the corpus, the mining job run, its ground truth.

A library for ``bench/world.py`` and ``bench/world_proposals.py`` (scripts never import each other).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from bench.pair_tables import THRESHOLDS_OFF
from pipelines.pairs.quality import GroundTruth
from pipelines.world.categories import CATEGORIES
from pipelines.world.generate import generate_split

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "assets/world_clip/world_clip.pt"
MINE_CONF = ROOT / "conf/world/mine.yaml"
# the world's own vocabulary: the plurals its caption writer uses, each naming its category
WORLD_SYNONYMS = {c.plural: c.name for c in CATEGORIES if c.plural != c.name}


def world_ground_truth(world: Path, split: str, *, captions: bool = True) -> GroundTruth:
    """The COCO ground truth of one split of ``world``, with the world's plurals as its synonyms."""
    ann = world / "coco/annotations"
    return GroundTruth(ann / f"instances_{split}.json", ann / f"captions_{split}.json" if captions else None,
                       synonyms=WORLD_SYNONYMS)


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
         prompt: str | None = None, extra: tuple[str, ...] = ()) -> Path:
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
             "output.report=false", *THRESHOLDS_OFF, *extra], out / f"mine-{name}.log")
    return pairs
