"""How well the image tower is used inside mining, against a bare encode_image loop and a matmul.

  python -m bench.clip_efficiency [--images 100] [--batches 1 8 16 32 64 128 256] [overrides ...]

In one run: (1) mines the world corpus (``out/bench/world-N``, generated once) with the pipeline
and reads the crops/s of its CLIP stage off the unit's stage timing (crops / seconds in
``encode_images``), and over the whole unit; (2) runs a bare ``encode_image`` loop on random
crops at each batch size and keeps the best; (3) counts the tower's FLOPs per crop
(``torch.utils.flop_counter``) and measures a large matmul in the same dtype, giving the bare
loop's share of the matmul rate. Writes ``out/bench/clip_efficiency.json``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.harness import REPO, ensure_world, machine, mine_timed, print_table, world_config, write_json

from pipelines.mine.model_stage import UnitMiner
from pipelines.records import WorkUnit

DTYPES = {"off": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _rate(fn, items: int, min_seconds: float, *, sync) -> float:
    fn()
    sync()
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        fn()
        n += items
    sync()
    return n / (time.perf_counter() - started)


def bare_encoder(miner: UnitMiner, batches: list[int], min_seconds: float) -> dict[int, float]:
    """crops/s of ``encode_image`` on random normalised crops, per batch size."""
    size, device, sync = miner.clip.image_size, miner.device, _sync(miner.device)
    rates = {}
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device=device)
        with torch.inference_mode(), miner._autocast():
            rates[batch] = _rate(lambda: miner.clip.model.encode_image(x), batch, min_seconds, sync=sync)
    return rates


def flops_per_crop(miner: UnitMiner) -> float:
    x = torch.randn(1, 3, miner.clip.image_size, miner.clip.image_size, device=miner.device)
    with torch.inference_mode(), miner._autocast(), FlopCounterMode(display=False) as counter:
        miner.clip.model.encode_image(x)
    return float(counter.get_total_flops())


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, *, min_seconds: float) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 * _rate(lambda: a @ b, 1, min_seconds, sync=_sync(device))


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--config", default="conf/world/mine.yaml")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--matmul", type=int, default=2048, help="side of the square matmul")
    parser.add_argument("--json", type=Path, default=REPO / "out/bench/clip_efficiency.json")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    world = ensure_world(REPO / f"out/bench/world-{args.images}", args.images)
    miner = UnitMiner(world_config(world, REPO / "out/bench/pairs/efficiency", *args.overrides, config=args.config))
    unit = miner.reader.plan_units()[0]
    miner.mine_unit(WorkUnit(index=1, source=unit.source, start=0, stop=4))
    mined = mine_timed(miner, unit)
    inside = mined["crops"] / mined["timing"]["clip"]
    bare = bare_encoder(miner, args.batches, args.min_seconds)
    best_batch = max(bare, key=bare.get)
    flops = flops_per_crop(miner)
    dtype = DTYPES[miner.cfg.clip.autocast] if miner.cfg.clip.autocast != "off" else \
        next(miner.clip.model.parameters()).dtype
    peak = matmul_flops(miner.device, dtype, args.matmul, min_seconds=args.min_seconds)
    result = {
        "machine": machine(), "model": miner.clip.name, "image_size": miner.clip.image_size,
        "mining_clip_batch": miner.cfg.clip.batch_size, "autocast": miner.cfg.clip.autocast,
        "crops": mined["crops"], "inside_mining_clip_crops_per_s": inside,
        "inside_mining_unit_crops_per_s": mined["crops_per_s"], "bare_crops_per_s": bare,
        "best_batch": best_batch, "inside_over_bare": inside / bare[best_batch],
        "flops_per_crop": flops, "gflops_per_crop": flops / 1e9, "bare_flops_per_s": flops * bare[best_batch],
        "matmul_dtype": str(dtype), "matmul_flops_per_s": peak,
        "bare_over_matmul": flops * bare[best_batch] / peak, "timing": mined["timing"],
    }
    print(f"{miner.clip.name} at {miner.clip.image_size}px on {miner.device}, mining batch "
          f"{miner.cfg.clip.batch_size}, autocast {miner.cfg.clip.autocast}, {mined['crops']} crops mined")
    print_table([{"batch": b, "rate": r} for b, r in bare.items()], [("batch", "bare batch", "d"),
                                                                      ("rate", "crops/s", ".0f")])
    print_table([result], [("inside_mining_clip_crops_per_s", "CLIP stage in mining, crops/s", ".0f"),
                           ("inside_mining_unit_crops_per_s", "whole unit, crops/s", ".0f"),
                           ("inside_over_bare", "stage ÷ bare best", ".2f"),
                           ("gflops_per_crop", "GFLOP/crop", ".3g"), ("bare_flops_per_s", "bare FLOP/s", ".3g"),
                           ("matmul_flops_per_s", f"matmul {args.matmul}² FLOP/s", ".3g"),
                           ("bare_over_matmul", "bare ÷ matmul", ".2f")])
    write_json(args.json, result)


if __name__ == "__main__":
    main()
