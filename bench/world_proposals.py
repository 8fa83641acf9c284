"""Class-agnostic proposal quality in the world: mask recall of seen objects, unseen objects and
backgrounds at 16 / 32 / 100 proposals, for every proposal backend, on a freshly generated split.

    python -m bench.world_proposals                    # ~2 min: 200 held-out images, maskformer vs superpixel
    python -m bench.world_proposals --val 60 --seed 5  # smaller

A ground-truth region is *covered* at k proposals when one of the backend's k best proposals
(ranked by the backend's own score, ties in the backend's order) has mask IoU ≥ 0.5 with it.
"Seen" / "unseen" objects follow the MaskFormer checkpoint's training vocabulary (the world things
it was not trained on are unseen); backgrounds (stuff regions) are seen classes. The split is the
``val`` split of a world generated with ``--seed`` (default 2: neither the MaskFormer's training
world, seed 1, nor the world bench/world.py mines, seed 0).

bench/world.py prints the same table when it mines with ``maskformer`` (and adds the pair precision
of maskformer proposals beside gt and superpixel).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from bench.world_mining import ensure_world
from bench.world_recall import (CHECKPOINT, ensure_split, maskformer_seen_names, mine_precision,
                                precision_table, recall_table, run_recall)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, default=ROOT / "out/world/proposals_data")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="world MaskFormer weights")
    ap.add_argument("--seed", type=int, default=2, help="world seed of the held-out split")
    ap.add_argument("--val", type=int, default=200, help="held-out images")
    ap.add_argument("--mine", type=int, default=0, help="also mine this many images of bench/world.py's world "
                                                         "(seed 0) with gt, superpixel and maskformer")
    ap.add_argument("--json", type=Path, default=ROOT / "out/world/proposals_bench.json")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    ensure_split(args.world, args.seed, args.val)
    result = {"settings": {k: str(v) for k, v in vars(args).items()},
              "recall": run_recall(args.world, args.val, args.checkpoint)}
    print(recall_table(result["recall"]))
    if args.mine:
        mined_world = ROOT / "out/world/data"
        ensure_world(mined_world, 0, args.mine, 0)
        result["mining"] = mine_precision(mined_world, args.json.parent / "proposals_mining", n_train=args.mine,
                                          units=max(1, args.mine // 2), backends=["gt", "superpixel", "maskformer"])
        print(precision_table(result["mining"], maskformer_seen_names(args.checkpoint)))
    result["seconds"] = round(time.time() - t0, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten {args.json} in {result['seconds'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
