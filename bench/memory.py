"""Peak memory of the mining driver and of one actor for a corpus of N and of 10·N images.

  python -m bench.memory [--n 100] [--unit 50]

Generates world corpora of N and 10·N images (``out/bench/world-N``; COCO json and WebDataset
tars of ``--unit`` images each), then for each corpus and format runs, each in a fresh process:
the driver's part (plan the units, skip committed ones: :func:`pipelines.mine.driver.plan`, keep
the plan) and one actor's part (build a :class:`~pipelines.mine.model_stage.UnitMiner`, mine one unit).
Reports the peak RSS, the RSS after imports (the floor every process pays) and the growth above
it, and the 10·N ÷ N ratios. Writes ``out/bench/memory.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.harness import REPO, ensure_world, print_table, write_json

CHILD = r"""
import json, resource, sys
import torch, ray  # the imports every driver/actor pays, before the corpus is touched
from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.model_stage import UnitMiner
from pipelines.mine.driver import plan
floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = load_config(MineConfig, {config!r}, {overrides!r})
if {role!r} == "driver":
    todo, committed = plan(cfg)
    units = len(todo)
else:
    miner = UnitMiner(cfg)
    unit = miner.reader.plan_units()[0]
    units = 1
    miner.mine_unit(unit)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"floor_mb": floor / 1024, "peak_mb": peak / 1024, "units": units}}))
"""


def measure(role: str, world: Path, fmt: str, *, unit: int, out: Path) -> dict:
    corpus = ([f"corpus.url={world}/coco/annotations/captions_train.json", f"corpus.images_url={world}/coco/train",
               f"corpus.images_per_unit={unit}"] if fmt == "coco" else
              ["corpus.format=webdataset", f"corpus.url={world}/wds/train"])
    overrides = [*corpus, f"output.url={out}", "output.overwrite=true"]
    code = CHILD.format(repo=str(REPO), config=str(REPO / "conf/world/mine.yaml"), overrides=overrides, role=role)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--unit", type=int, default=50, help="images per unit (COCO) and per tar (WebDataset)")
    parser.add_argument("--json", type=Path, default=REPO / "out/bench/memory.json")
    args = parser.parse_args()
    rows = []
    for images in (args.n, 10 * args.n):
        world = ensure_world(REPO / f"out/bench/world-{images}", images, shard_size=args.unit)
        for fmt in ("coco", "webdataset"):
            for role in ("driver", "actor"):
                r = measure(role, world, fmt, unit=args.unit, out=REPO / f"out/bench/pairs/memory-{fmt}-{images}")
                rows.append({"images": images, "format": fmt, "role": role, **r, "growth_mb": r["peak_mb"] - r["floor_mb"]})
    for row in rows:
        small = next(r for r in rows if r["images"] == args.n and r["format"] == row["format"] and r["role"] == row["role"])
        row["peak_ratio"] = row["peak_mb"] / small["peak_mb"]
    print(f"peak RSS, N={args.n} and 10·N={10 * args.n} images, {args.unit} images per unit")
    print_table(rows, [("images", "images", "d"), ("format", "format", "s"), ("role", "process", "s"),
                       ("units", "units", "d"), ("floor_mb", "after imports MB", ".0f"), ("peak_mb", "peak MB", ".0f"),
                       ("growth_mb", "growth MB", ".1f"), ("peak_ratio", "peak ÷ N's", ".2f")])
    write_json(args.json, {"n": args.n, "unit": args.unit, "rows": rows})


if __name__ == "__main__":
    main()
