"""Tune CLIP on mined (masked crop, noun) pairs: mask prompt tuning (OVSeg), fine-tuning, or both.

  torchrun --nproc_per_node=N jobs/tune_mpt.py [--config conf/tune_mpt.yaml] [key.sub=value ...]
  python jobs/tune_mpt.py --config conf/smoke/tune_mpt.yaml            # one process, offline

Modes (optim.mode): mpt | finetune | finetune+mpt. Losses (loss.name): vocab_ce (default) |
contrastive (OVSeg's). NCCL on GPU, gloo on CPU. Checkpoints go to run.out_dir/checkpoints every
run.save_every steps and at the end; run.resume=auto (default; `resume=auto` also works) continues
from the latest one. TensorBoard logs: run.out_dir/tensorboard. Exports: run.out_dir/export.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tqdm import tqdm

from pipelines.config.cli import StartupError, job_main, job_parser, load_job_config, startup
from pipelines.train.config import TuneConfig

SHORTHANDS = {"resume": "run.resume", "mode": "optim.mode", "out_dir": "run.out_dir"}


class BarReporter:
    """tqdm progress bar (rank 0 only)."""

    def start(self, total: int, initial: int) -> None:
        self.bar = tqdm(total=total, initial=initial, unit="step", desc="tuning", dynamic_ncols=True)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['acc']:.3f}",
                             lr=f"{metrics['lr']:.2e}", sps=f"{metrics['samples_per_s']:.1f}", refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def parse_args(argv: list[str] | None = None):
    return job_parser(TuneConfig, __doc__, default_config="conf/tune_mpt.yaml", shorthands=SHORTHANDS,
                      overrides_help="overrides, e.g. optim.mode=finetune run.resume=auto").parse_args(argv)


def _fmt_eval(result: dict | None) -> str:
    if not result:
        return "n/a"
    return (f"top1 {result['top1']:.3f} top5 {result['top5']:.3f} on {result['samples']} crops, "
            f"{result['vocab']} nouns (chance {result['chance']:.3f})")


@job_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_job_config(TuneConfig, args)
    from pipelines.train.dist import checked_once, close_world, init_world
    from pipelines.train.loop import Tuner
    from pipelines.train.setup import storage_check, tune_sources

    with startup("starting the process group"):
        world = init_world(cfg.run.device, key="run.device")
    try:
        if problem := checked_once(lambda: storage_check(tune_sources(cfg)), world):  # rank 0 probes, once
            raise StartupError(problem)
        with startup():  # shards, CLIP weights, prompt file
            tuner = Tuner(cfg, world, BarReporter() if world.is_main else None)
        summary = tuner.run()
    finally:
        close_world()
    if world.is_main:
        s = summary
        print(f"\n== tune_mpt {s['mode']} ({s['loss_name']}) on {s['clip']}, {s['world_size']} x {s['device']}")
        print(f"steps {s['resumed_from_step']} -> {s['step']} of {s['total_steps']} "
              f"(global batch {s['global_batch']}, {s['samples_seen']} samples seen)")
        if s["first_loss"] is not None:
            print(f"loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}; {s['samples_per_s']:.1f} samples/s")
        print(f"skipped samples: {json.dumps(s['skipped']) if s['skipped'] else 'none'}")
        print(f"eval before: {_fmt_eval(s.get('eval_before'))}")
        print(f"eval after:  {_fmt_eval(s.get('eval_after'))}")
        print(f"checkpoint: {s['checkpoint']}")
        for name, path in s["exports"].items():
            print(f"export {name}: {path}")
        print(f"summary: {Path(cfg.run.out_dir) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
