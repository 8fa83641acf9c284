"""Tune CLIP on mined (masked crop, noun) pairs: mask prompt tuning (OVSeg), fine-tuning, or both.

  torchrun --nproc_per_node=N jobs/tune_mpt.py [--config conf/tune_mpt.yaml] [key.sub=value ...]
  python jobs/tune_mpt.py --config conf/smoke/tune_mpt.yaml            # one process, offline

Modes (optim.mode): mpt | finetune | finetune+mpt. Losses (loss.name): vocab_ce (default) |
contrastive (OVSeg's). NCCL on GPU, gloo on CPU. Checkpoints go to run.out_dir/checkpoints every
run.save_every steps and at the end; run.resume=auto (default; `resume=auto` also works) continues
from the latest one. TensorBoard logs: run.out_dir/tensorboard. Exports: run.out_dir/export.
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
from pipelines.train.config import TuneConfig  # noqa: E402

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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=help_text(TuneConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/tune_mpt.yaml", help="YAML config (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", help="overrides, e.g. optim.mode=finetune run.resume=auto")
    parser.add_argument("--log-level", default="WARNING", help="log level (default: %(default)s)")
    args = parser.parse_args(argv)
    args.overrides = [SHORTHANDS.get(o.split("=", 1)[0], o.split("=", 1)[0]) + o[len(o.split("=", 1)[0]):]
                      for o in args.overrides]
    return args


def _fmt_eval(result: dict | None) -> str:
    if not result:
        return "n/a"
    return (f"top1 {result['top1']:.3f} top5 {result['top5']:.3f} on {result['samples']} crops, "
            f"{result['vocab']} nouns (chance {result['chance']:.3f})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(TuneConfig, args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from pipelines.train.dist import close_world, init_world
    from pipelines.train.loop import run

    from ovseg.clip import ClipLoadError

    world = init_world(cfg.run.device)
    try:
        summary = run(cfg, world, BarReporter() if world.is_main else None)
    except (ClipLoadError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
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
