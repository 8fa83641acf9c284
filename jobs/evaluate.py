"""Score open-vocabulary segmentation on a benchmark: mIoU, per-class IoU, fwIoU, pixel accuracy.

  python jobs/evaluate.py --config conf/world/evaluate.yaml [key=value ...]
  python jobs/evaluate.py --config conf/world/evaluate.yaml eval.oracle=gt_masks      # the paper's oracles
  python jobs/evaluate.py data.dataset=ade150 data.root=$DETECTRON2_DATASETS clip.model=ViT-L-14 ...
  torchrun --nproc_per_node=4 jobs/evaluate.py --config ...     # images sharded, confusion matrices summed

Datasets: ade150 | ade847 | pc59 | pc459 | voc20 in the prepared layouts of ov-seg's
datasets/DATASETS.md, and world (the generated corpus). Writes metrics.json, per_class.md and
overlays/ (prediction beside ground truth) into output.dir. A missing folder or a label value outside
the class list stops with a one-line error naming the file.
Exit status: 0 done, 2 bad config / dataset, 3 models unusable.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config.help import help_text  # noqa: E402
from pipelines.config.load import ConfigError, load_config  # noqa: E402
from pipelines.segment.config import EvaluateConfig  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=help_text(EvaluateConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (default: the built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.max_images=20 eval.oracle=gt_masks")
    parser.add_argument("--log-level", default="WARNING", help="log level (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rank = int(os.environ.get("RANK", "0"))
    say = print if rank == 0 else (lambda *a, **k: None)
    try:
        cfg = load_config(EvaluateConfig, args.config, args.overrides)
    except ConfigError as err:
        say(f"error: {err}", file=sys.stderr)
        return 2
    from pipelines.segment.datasets import DatasetError, open_dataset

    try:
        data = open_dataset(cfg.data.dataset, cfg.data.root, storage_options=cfg.output.storage_options,
                            max_images=cfg.data.max_images or None)
    except DatasetError as err:
        say(f"error: {err}", file=sys.stderr)
        return 2
    from ovseg.clip import ClipLoadError
    from pipelines.segment.evaluate import evaluate
    from pipelines.segment.segmenter import SegmentSetupError, Segmenter

    try:
        segmenter = Segmenter(cfg, data.classes)
    except (ClipLoadError, SegmentSetupError, FileNotFoundError, ValueError) as err:
        say(f"error: {err}", file=sys.stderr)
        return 3
    say(f"evaluating {data.name} ({len(data.pairs)} images, {len(data.classes)} classes), oracle {cfg.eval.oracle}, "
        f"proposals {cfg.proposals.backend}, CLIP {segmenter.bundle.name}" + (" + mask prompt" if segmenter.prompt else ""))
    try:
        metrics = evaluate(segmenter, data, cfg)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if metrics is not None:
        def pct(x):
            return "n/a" if x is None else f"{100 * x:.1f}"
        groups = "".join(f", {g} {pct(v['mIoU'])}" for g, v in metrics["groups"].items())
        say(f"mIoU {pct(metrics['mIoU'])} (fwIoU {pct(metrics['fwIoU'])}, pixel acc {pct(metrics['pixel_acc'])}{groups}) "
            f"on {metrics['images']} images in {metrics['seconds']:.0f} s -> {cfg.output.dir}/metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
