"""Train an open-vocabulary MaskFormer on segmentation annotations of seen categories (OVSeg's step 1).

  torchrun --nproc_per_node=N jobs/train_maskformer.py --config conf/world/train_maskformer.yaml [key.sub=value ...]
  python jobs/train_maskformer.py --config conf/world/train_maskformer.yaml      # one process

The classifier is the CLIP text embeddings of the training vocabulary (the annotation file's
categories minus data.unseen), set-prediction loss with Hungarian matching (class + mask + dice).
NCCL on GPU, gloo on CPU. Checkpoints go to run.out_dir/checkpoints every run.save_every steps and
at the end; run.resume=auto (default; `resume=auto` also works) continues from the latest one.
TensorBoard logs: run.out_dir/tensorboard. The weights with the vocabulary embeddings:
run.export (default run.out_dir/export/maskformer.pt), for proposals.backend=maskformer.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from pipelines.config.load import ConfigError, load_config  # noqa: E402
from pipelines.config.help import help_text  # noqa: E402
from pipelines.train.maskformer_config import TrainMaskFormerConfig  # noqa: E402

SHORTHANDS = {"resume": "run.resume", "out_dir": "run.out_dir", "steps": "optim.max_steps"}


class BarReporter:
    """tqdm progress bar (rank 0 only)."""

    def start(self, total: int, initial: int) -> None:
        self.bar = tqdm(total=total, initial=initial, unit="step", desc="training", dynamic_ncols=True)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", ce=f"{metrics['loss_ce']:.3f}",
                             mask=f"{metrics['loss_mask']:.3f}", dice=f"{metrics['loss_dice']:.3f}",
                             lr=f"{metrics['lr']:.1e}", ips=f"{metrics['images_per_s']:.1f}", refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=help_text(TrainMaskFormerConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/world/train_maskformer.yaml", help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="overrides, e.g. optim.max_steps=200 run.resume=auto")
    parser.add_argument("--log-level", default="WARNING", help="log level (default: %(default)s)")
    args = parser.parse_args(argv)
    args.overrides = [SHORTHANDS.get(o.split("=", 1)[0], o.split("=", 1)[0]) + o[len(o.split("=", 1)[0]):]
                      for o in args.overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(TrainMaskFormerConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from pipelines.train.dist import close_world, init_world
    from pipelines.train.maskformer_loop import run

    from ovseg.clip import ClipLoadError

    world = init_world(cfg.run.device)
    try:
        s = run(cfg, world, BarReporter() if world.is_main else None)
    except (ClipLoadError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        close_world()
    if world.is_main:
        print(f"\n== train_maskformer {s['spec']} ({s['parameters'] / 1e6:.2f} M parameters), "
              f"{s['world_size']} x {s['device']}")
        print(f"vocabulary: {len(s['vocabulary'])} seen categories; held out: {', '.join(s['unseen']) or 'none'}; "
              f"dropped annotations: {json.dumps(s['dropped_annotations'])}")
        print(f"steps {s['resumed_from_step']} -> {s['step']} of {s['total_steps']} "
              f"(global batch {s['global_batch']}, {s['samples_seen']} images seen of {s['images']})")
        if s["first"] is not None:
            first, last = s["first"], s["last"]
            print("loss " + ", ".join(f"{k.removeprefix('loss_') or k} {first[k]:.3f} -> {last[k]:.3f}"
                                      for k in first) + f" (last: mean of 20 steps); {s['images_per_s']:.1f} images/s")
        print(f"checkpoint: {s['checkpoint']}")
        print(f"export: {s['export'] or 'none (not finished)'}")
        print(f"summary: {Path(cfg.run.out_dir) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
