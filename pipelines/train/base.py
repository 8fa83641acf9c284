"""What every trainer shares (a torchtitan-style component): the checkpoint cadence, saving and
restoring the common state (optimizer, schedule, step, samples, every rank's RNG), progress
logging (TensorBoard on rank 0, the job's reporter) and the weight-decay parameter groups.

:class:`~pipelines.train.loop.Tuner` (mask prompt tuning) and
:class:`~pipelines.train.maskformer_loop.MaskFormerTrainer` build on :class:`TrainerBase`; each
adds its own model state and format tag to the checkpoint.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from pipelines.config.load import as_dict
from pipelines.storage.redact import redact
from pipelines.train import checkpoint as ckpt
from pipelines.train.dist import World, all_gather_objects, barrier

__all__ = ["Reporter", "TrainerBase", "param_groups"]

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """The job's progress display (rank 0 only)."""

    def start(self, total: int, initial: int) -> None: ...
    def step(self, step: int, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay: Callable[[str, nn.Parameter], bool]) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: ``no_decay`` ones first (weight decay 0), then the
    rest with ``weight_decay`` (left out when empty)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]
    decay = [p for n, p in named if not no_decay(n, p)]
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    return groups


class TrainerBase:
    """The shared state and habits of a trainer; subclasses set ``optimizer`` and ``schedule``.

    Attributes:
        cfg: the job's config (``cfg.run``: out_dir, tensorboard, save_every, log_every, keep_last).
        world: the process group view (rank, size, device).
        step / samples: optimizer steps done / samples seen, restored on resume.
    """

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler

    def __init__(self, cfg: Any, world: World, reporter: Reporter | None = None) -> None:
        self.cfg, self.world, self.reporter = cfg, world, reporter
        self.out = Path(cfg.run.out_dir)
        self.step, self.samples = 0, 0
        self.writer = None
        if world.is_main and cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))

    # ---------------------------------------------------------------- checkpoints
    def save_due(self, stop: int) -> bool:
        """A checkpoint after every ``run.save_every`` steps and at the last step of this run."""
        return self.step % self.cfg.run.save_every == 0 or self.step == stop

    def save_state(self, fmt: str, own: dict[str, Any]) -> None:
        """Checkpoint the common state plus ``own`` (rank 0 writes; every rank gives its RNG state)."""
        rng = all_gather_objects(ckpt.rng_state(), self.world)
        if self.world.is_main:
            state = {"format": fmt, "step": self.step, "samples": self.samples,
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
                     "rng": rng, "world_size": self.world.size, "config": redact(as_dict(self.cfg)), **own}
            ckpt.save_checkpoint(state, ckpt.checkpoint_path(self.out, self.step))
            ckpt.prune(self.out, self.cfg.run.keep_last)
        barrier(self.world)

    def restore_state(self, source: Path | str, state: dict[str, Any]) -> None:
        """Load the common state of a checkpoint (the subclass has loaded its model state)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        self.step, self.samples = state["step"], state["samples"]
        if state.get("world_size") == self.world.size:
            ckpt.set_rng_state(state["rng"][self.world.rank])
        else:
            log.warning("world size changed (%s -> %d): RNG state not restored", state.get("world_size"),
                        self.world.size)
        log.info("resumed from %s at step %d", source, self.step)

    # ---------------------------------------------------------------- logging
    def log_step(self, metrics: dict[str, float], stop: int) -> None:
        """TensorBoard scalars every ``run.log_every`` steps (and the last), the reporter every step."""
        if self.writer and (self.step % self.cfg.run.log_every == 0 or self.step == stop):
            for key, value in metrics.items():
                self.writer.add_scalar(f"train/{key}", value, self.step)
        if self.reporter:
            self.reporter.step(self.step, metrics)
