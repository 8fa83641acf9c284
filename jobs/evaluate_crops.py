"""Zero-shot masked-crop accuracy on pair shards: plain CLIP vs CLIP + tuned mask prompt.

  python jobs/evaluate_crops.py urls=out/pairs prompt_file=out/tune_mpt/export/mpt_prompt.pt
  python jobs/evaluate_crops.py urls=out/pairs clip.model=ViT-B-16 clip.pretrained=openai
  torchrun --nproc_per_node=N jobs/evaluate_crops.py urls=... prompt_file=...

Each crop is classified over the nouns present in the evaluated set (VILD prompt ensemble). With
`holdout_percent=P` only the pairs held out from training by `data.holdout_percent=P` are used.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.config.cli import StartupError, job_main, job_parser, load_job_config, startup
from pipelines.train.config import EvalCropsConfig


@job_main
def main(argv: list[str] | None = None) -> int:
    parser = job_parser(EvalCropsConfig, __doc__, overrides_help="key=value, e.g. urls=out/pairs prompt_file=...")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    cfg = load_job_config(EvalCropsConfig, args)
    from pipelines.train.dist import checked_once, close_world, init_world
    from pipelines.train.evaluate import evaluate_shards
    from pipelines.train.setup import storage_check

    with startup("starting the process group"):
        world = init_world(cfg.device, key="device")
    try:
        if problem := checked_once(lambda: storage_check([("urls", cfg.urls, cfg.storage_options)]), world):
            raise StartupError(problem)
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
