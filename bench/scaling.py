"""Scaling: mining with 1 vs 2 actors (and with the CPU stage in its own Ray workers), and
``tune_mpt`` steps with 1 vs 2 processes.

  python -m bench.scaling [--images 40] [--unit 10] [--tune-seconds 20]

Mining: the world corpus (``out/bench/world-N``) in units of ``--unit`` images through
:func:`pipelines.mine.driver.run_mining` on a local Ray: 1 actor, 2 actors, and 1 actor fed by
``--cpu-workers`` CPU-stage workers (``ray.cpu_workers_per_actor``). images/s counts from the
actors being ready; ``wait/unit`` is the mean time per unit the model stage sat idle waiting for
a prepared batch (the unit stats' ``timing.wait``). Tuning: the training step of
``bench/tune_mpt_speed.py`` (mask prompt tuning, ``ovseg-tiny-vit``, one torch thread per
process) in 1 process and in 2 concurrent processes, samples/s summed (an upper bound for DDP:
no gradient all-reduce). Writes ``out/bench/scaling.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import ray

from bench.harness import REPO, ensure_world, machine, print_table, write_json

from pipelines.mine.driver import run_mining

TUNE_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
torch.manual_seed(0)
from bench.tune_mpt_speed import make_cell
step, _ = make_cell({model!r}, "mpt", {batch}, "cpu")
step(); step()
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < {seconds}:
    step(); n += {batch}
print(json.dumps({{"samples_per_s": n / (time.perf_counter() - t0)}}))
"""


def mine(world: Path, *, unit: int, actors: int, cpu_workers: int, out: Path) -> dict:
    from harness import world_config

    cfg = world_config(world, out, f"corpus.images_per_unit={unit}", f"ray.num_actors={actors}",
                       f"ray.cpu_workers_per_actor={cpu_workers}", "output.report=false")
    ray.init(num_cpus=max(2, actors * (1 + cpu_workers)), include_dashboard=False, log_to_driver=False)
    try:
        result = run_mining(cfg)
    finally:
        ray.shutdown()
    images = sum(s["images"] for s in result.mined)
    waits = [s["timing"].get("wait", 0.0) for s in result.mined]
    return {"actors": actors, "cpu_workers": cpu_workers, "units": len(result.mined), "images": images,
            "images_per_s": images / result.mining_seconds, "wait_per_unit_s": sum(waits) / len(waits),
            "unit_seconds": sum(s["seconds"] for s in result.mined) / len(result.mined)}


def tune(processes: int, *, seconds: float, model: str, batch: int) -> float:
    code = TUNE_CHILD.format(repo=str(REPO), model=model, batch=batch, seconds=seconds)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(processes)]
    rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["samples_per_s"] for p in procs]
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--unit", type=int, default=10)
    parser.add_argument("--cpu-workers", type=int, default=1)
    parser.add_argument("--tune-seconds", type=float, default=20.0)
    parser.add_argument("--tune-model", default="ovseg-tiny-vit")
    parser.add_argument("--json", type=Path, default=REPO / "out/bench/scaling.json")
    args = parser.parse_args()
    world = ensure_world(REPO / f"out/bench/world-{args.images}", args.images)
    runs = []
    for actors, workers in ((1, 0), (2, 0), (1, args.cpu_workers)):
        runs.append(mine(world, unit=args.unit, actors=actors, cpu_workers=workers,
                         out=REPO / f"out/bench/pairs/scaling-{actors}-{workers}"))
    print(f"mining {args.images} world images in units of {args.unit} on a local Ray")
    print_table(runs, [("actors", "actors", "d"), ("cpu_workers", "CPU workers/actor", "d"),
                       ("images_per_s", "images/s", ".2f"), ("unit_seconds", "s/unit", ".1f"),
                       ("wait_per_unit_s", "model wait/unit s", ".2f")])
    tuning = {n: tune(n, seconds=args.tune_seconds, model=args.tune_model, batch=32) for n in (1, 2)}
    print(f"tune_mpt step ({args.tune_model}, batch 32, 1 thread/process): 1 process {tuning[1]:.1f} samples/s, "
          f"2 processes {tuning[2]:.1f} samples/s, ratio {tuning[2] / tuning[1]:.2f}")
    write_json(args.json, {"machine": machine(), "mining": runs, "tune_mpt_samples_per_s": tuning,
                           "tune_ratio_2_over_1": tuning[2] / tuning[1]})


if __name__ == "__main__":
    main()
