"""Matching strategies × proposals × crop views in the world, every precision beside its chance.

    python -m bench.world_matching --images 200                      # gt, superpixel, maskformer; tight view
    python -m bench.world_matching --images 200 --views tight,tight+context

For every proposal backend and crop view, ``jobs/mine.py`` mines the first ``--images`` train
images of the world (conf/world/mine.yaml, with ``output.candidates=true``); then, from those
shards alone: the pairs' precision and recall beside the precision of a random choice among the
same candidate masks, every matching strategy replayed on the stored similarities, and the
precision–recall curve over ``min_score`` / ``min_margin`` (bench/pair_tables.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.pair_tables import (THRESHOLDS_OFF, best_point, mining_table, pr_curve, pr_table, quality_with_chance,
                               strategy_rows, strategy_table, world_matching)
from pipelines.pairs.quality import GroundTruth
from pipelines.world.generate import image_id_of

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "assets/world_clip/world_clip.pt"


def mine(world: Path, out: Path, *, backend: str, view: str, images: int, clip: Path, extra: list[str]) -> Path:
    """Mine the first ``images`` train images with ``backend`` and crop ``view``; returns the folder."""
    folder = out / f"pairs-{backend}-{view.replace('+', '_')}"
    if folder.exists():
        shutil.rmtree(folder)
    ann = world / "coco/annotations"
    args = [sys.executable, "jobs/mine.py", "--config", str(ROOT / "conf/world/mine.yaml"),
            f"corpus.url={ann / 'captions_train.json'}", f"corpus.images_url={world / 'coco/train'}",
            f"corpus.images_per_unit={images}", "run.max_units=1", f"proposals.backend={backend}",
            f"proposals.instances_url={ann / 'instances_train.json'}", f"output.url={folder}",
            f"clip.checkpoint={clip}", f"crops.views={view}", "output.candidates=true", "output.report=false",
            *THRESHOLDS_OFF, *extra]
    log = out / f"mine-{folder.name}.log"
    with open(log, "w") as f:
        proc = subprocess.run(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    if proc.returncode != 0:
        raise SystemExit(f"mining {folder.name} failed; see {log}")
    return folder


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=ROOT / "data/world", help="a generated world (COCO format)")
    ap.add_argument("--out", type=Path, default=ROOT / "out/world/matching")
    ap.add_argument("--images", type=int, default=200, help="train images mined")
    ap.add_argument("--backends", default="gt,superpixel,maskformer")
    ap.add_argument("--views", default="tight", help="comma list of crops.views values")
    ap.add_argument("--clip", type=Path, default=CLIP, help="world CLIP weights")
    ap.add_argument("--curve", default="maskformer", help="backends whose PR curve is printed")
    ap.add_argument("--reuse", action="store_true", help="measure existing shards under --out, do not mine")
    ap.add_argument("overrides", nargs="*", help="extra jobs/mine.py overrides (key=value)")
    args = ap.parse_args(argv)
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    ann = args.world / "coco/annotations"
    gt = GroundTruth(ann / "instances_train.json", ann / "captions_train.json")
    ids = {image_id_of("train", i) for i in range(args.images)}
    base = world_matching()
    for o in args.overrides:
        if o.startswith("matching."):
            key, value = o.split("=", 1)
            setattr(base, key.split(".", 1)[1], type(getattr(base, key.split(".", 1)[1]))(value))
    result: dict = {"settings": {k: str(v) for k, v in vars(args).items()}, "mining": {}, "strategies": {},
                    "curves": {}, "best": {}}
    for view in [v for v in args.views.split(",") if v]:
        for backend in [b for b in args.backends.split(",") if b]:
            name = f"{backend}, {view}"
            folder = args.out / f"pairs-{backend}-{view.replace('+', '_')}"
            if not args.reuse:
                folder = mine(args.world, args.out, backend=backend, view=view, images=args.images, clip=args.clip,
                              extra=list(args.overrides))
            q = quality_with_chance(folder, gt, image_ids=ids)
            result["mining"][name] = q
            result["strategies"][name] = strategy_rows(folder, gt, base, image_ids=ids)
            if backend in args.curve.split(","):
                curve = pr_curve(folder, gt, base, image_ids=ids)
                result["curves"][name] = curve
                today = result["strategies"][name]["best_mask"]["by_kind"]["thing"]["recall"]
                result["best"][name] = best_point(curve, min_recall=today)
            print(f"{name}: {q['pairs']} pairs, precision {q['precision']:.3f} (chance {q['chance']['precision']:.3f})",
                  flush=True)
    print("\n== pairs as mined (thresholds of conf/world/mine.yaml) ==")
    print(mining_table(result["mining"]))
    print("\n== matching strategies replayed on the same similarities (P = precision, R = recall) ==")
    print(strategy_table(result["strategies"]))
    for name, curve in result["curves"].items():
        print(f"\n== {name}: object precision-recall over min_score x min_margin ==")
        print(pr_table(curve))
        best = result["best"][name]
        if best:
            b = best["by_kind"]["thing"]
            print(f"best object precision at recall >= best_mask's: {best['params']['strategy']} "
                  f"min_score {best['params']['min_score']} min_margin {best['params']['min_margin']}: "
                  f"P {b['precision']:.3f} (chance {b['chance']:.3f}) R {b['recall']:.3f}")
    result["seconds"] = round(time.time() - t0, 1)
    path = args.out / "world_matching.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten {path} in {result['seconds'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
