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

import json
import sys
from pathlib import Path

from tqdm import tqdm

from pipelines.config.cli import job_main, job_parser, load_job_config, startup
from pipelines.train.maskformer_config import TrainMaskFormerConfig

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


def parse_args(argv: list[str] | None = None):
    return job_parser(TrainMaskFormerConfig, __doc__, default_config="conf/world/train_maskformer.yaml",
                      shorthands=SHORTHANDS,
                      overrides_help="overrides, e.g. optim.max_steps=200 run.resume=auto").parse_args(argv)


@job_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_job_config(TrainMaskFormerConfig, args)
    from pipelines.train.dist import close_world, init_world
    from pipelines.train.maskformer_loop import MaskFormerTrainer

    with startup("starting the process group"):
        world = init_world(cfg.run.device, key="run.device")
    try:
        with startup():  # annotations, images, CLIP weights, init_from
            trainer = MaskFormerTrainer(cfg, world, BarReporter() if world.is_main else None)
        s = trainer.run()
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
