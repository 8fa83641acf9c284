"""The mining pipeline against the naive reference loop, same models, corpus and device.

  python -m bench.pipeline_vs_naive [--images 100] [--config conf/world/mine.yaml] [overrides ...]

Generates (once) a world corpus of ``--images`` images under ``out/bench/world-N``, builds every
variant's miner before any timing, warms each up on a few images, then mines the whole corpus as
one unit with each variant in turn: the naive loop (``bench/harness.py``), the pipeline with the
CPU stage inline (``run.prefetch_batches=0``), with it in a thread ahead of the model, with the
CLIP batch size ``--best-batch`` (see ``bench/clip_efficiency.py``), and with bf16 autocast.
Prints images/s, scored crops/s, the ratio to naive and the seconds per stage (``wait`` = the
model stage idle, waiting for the CPU stage); writes ``out/bench/pipeline_vs_naive.json``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.harness import (REPO, STAGES, NaiveMiner, ensure_world, machine, mine_timed, print_table, world_config,
                     write_json)

from pipelines.mine.model_stage import UnitMiner
from pipelines.records import WorkUnit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--config", default="conf/world/mine.yaml")
    parser.add_argument("--best-batch", type=int, default=32, help="CLIP batch of the tuned variant")
    parser.add_argument("--skip", nargs="*", default=[], help="variant names to leave out")
    parser.add_argument("--json", type=Path, default=REPO / "out/bench/pipeline_vs_naive.json")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    world = ensure_world(REPO / f"out/bench/world-{args.images}", args.images)
    out = REPO / "out/bench/pairs"
    variants = {
        "naive": [], "pipeline_inline": ["run.prefetch_batches=0"], "pipeline": ["run.prefetch_batches=2"],
        "pipeline_best_batch": ["run.prefetch_batches=2", f"clip.batch_size={args.best_batch}"],
        "pipeline_bf16": ["run.prefetch_batches=2", f"clip.batch_size={args.best_batch}", "clip.autocast=bf16"],
    }
    variants = {k: v for k, v in variants.items() if k not in args.skip}
    miners = {}
    for name, extra in variants.items():
        miner = UnitMiner(world_config(world, out / name, *args.overrides, *extra, config=args.config))
        miners[name] = NaiveMiner(miner) if name == "naive" else miner
    unit = next(iter(miners.values())).m.reader.plan_units()[0] if "naive" in miners else \
        next(iter(miners.values())).reader.plan_units()[0]
    warm = WorkUnit(index=1, source=unit.source, start=0, stop=4)
    for miner in miners.values():
        miner.mine_unit(warm)
    rows = []
    for name, miner in miners.items():
        result = mine_timed(miner, unit)
        rows.append({"variant": name, **result, **{f"t_{s}": result["timing"].get(s) for s in STAGES}})
    base = rows[0]["images_per_s"] if rows[0]["variant"] == "naive" else None
    for row in rows:
        row["ratio"] = row["images_per_s"] / base if base else None
    print(f"world corpus, {args.images} images, config {args.config} {' '.join(args.overrides)}")
    print_table(rows, [("variant", "variant", "s"), ("images_per_s", "images/s", ".2f"),
                       ("crops_per_s", "crops/s", ".0f"), ("ratio", "× naive", ".2f"), ("pairs", "pairs", "d")]
                + [(f"t_{s}", s, ".2f") for s in STAGES])
    write_json(args.json, {"machine": machine(), "images": args.images, "config": args.config,
                           "overrides": args.overrides, "variants": rows})


if __name__ == "__main__":
    main()
