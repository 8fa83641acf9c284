"""Score open-vocabulary segmentation on a benchmark: mIoU, per-class IoU, fwIoU, pixel accuracy.

  python jobs/evaluate.py --config conf/world/evaluate.yaml [key=value ...]
  python jobs/evaluate.py --config conf/world/evaluate.yaml eval.oracle=gt_masks      # the paper's oracles
  python jobs/evaluate.py data.dataset=ade150 data.root=$DETECTRON2_DATASETS clip.model=ViT-L-14 ...
  torchrun --nproc_per_node=4 jobs/evaluate.py --config ...     # images sharded, confusion matrices summed

Datasets: ade150 | ade847 | pc59 | pc459 | voc20 in the prepared layouts of ov-seg's
datasets/DATASETS.md, and world (the generated corpus). Writes metrics.json, per_class.md and
overlays/ (prediction beside ground truth) into output.dir. A missing folder or a label value outside
the class list stops with a one-line error naming the file.
Exit status: 0 done, 2 a start-up error (config, dataset, models) in one line.
"""
from __future__ import annotations

import sys

from pipelines.config.cli import StartupError, is_main_process, job_main, job_parser, load_job_config, startup
from pipelines.segment.config import EvaluateConfig


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


@job_main
def main(argv: list[str] | None = None) -> int:
    args = job_parser(EvaluateConfig, __doc__,
                      overrides_help="config overrides, e.g. data.max_images=20 eval.oracle=gt_masks").parse_args(argv)
    cfg = load_job_config(EvaluateConfig, args)
    say = print if is_main_process() else (lambda *a, **k: None)
    from pipelines.segment.datasets import DatasetError, open_dataset

    try:
        data = open_dataset(cfg.data.dataset, cfg.data.root, storage_options=cfg.output.storage_options,
                            max_images=cfg.data.max_images or None)
    except DatasetError as err:
        raise StartupError(str(err)) from err
    from pipelines.segment.evaluate import evaluate
    from pipelines.segment.segmenter import Segmenter

    with startup("loading the models"):
        segmenter = Segmenter(cfg, data.classes)
    say(f"evaluating {data.name} ({len(data.pairs)} images, {len(data.classes)} classes), oracle {cfg.eval.oracle}, "
        f"proposals {cfg.proposals.backend}, CLIP {segmenter.bundle.name}" + (" + mask prompt" if segmenter.prompt else ""))
    try:
        metrics = evaluate(segmenter, data, cfg)
    except DatasetError as err:  # a label outside the class list, found while reading
        raise StartupError(str(err)) from err
    if metrics is not None:
        groups = "".join(f", {g} {_pct(v['mIoU'])}" for g, v in metrics["groups"].items())
        say(f"mIoU {_pct(metrics['mIoU'])} (fwIoU {_pct(metrics['fwIoU'])}, pixel acc {_pct(metrics['pixel_acc'])}{groups}) "
            f"on {metrics['images']} images in {metrics['seconds']:.0f} s -> {cfg.output.dir}/metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
