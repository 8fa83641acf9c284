"""Zero-shot masked-crop accuracy on pair shards: plain CLIP vs CLIP + tuned mask prompt.

  python jobs/evaluate_crops.py urls=out/pairs prompt_file=out/tune_mpt/export/mpt_prompt.pt
  python jobs/evaluate_crops.py urls=out/pairs clip.model=ViT-B-16 clip.pretrained=openai
  torchrun --nproc_per_node=N jobs/evaluate_crops.py urls=... prompt_file=...

Each crop is classified over the nouns present in the evaluated set (VILD prompt ensemble). With
`holdout_percent=P` only the pairs held out from training by `data.holdout_percent=P` are used.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config.load import ConfigError, load_config  # noqa: E402
from pipelines.train.config import EvalCropsConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="optional YAML with EvalCropsConfig keys")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. urls=out/pairs prompt_file=...")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(EvalCropsConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from pipelines.train.dist import close_world, init_world
    from pipelines.train.evaluate import evaluate_shards

    world = init_world(cfg.device)
    try:
        result = evaluate_shards(cfg, world)
    finally:
        close_world()
    if world.is_main:
        print(f"masked-crop zero-shot accuracy, {result['clip']} on {result['urls']}")
        for name in ("plain", "prompted"):
            if name in result:
                r = result[name]
                print(f"  {name:9s} top1 {r['top1']:.3f}  top5 {r['top5']:.3f}  "
                      f"({r['samples']} crops, {r['vocab']} nouns, chance {r['chance']:.3f})")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
