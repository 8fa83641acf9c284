"""The tuning run: resume, evaluate before, train, checkpoint, evaluate after, export, summarise.

:func:`run` is called in every torchrun process; rank 0 writes checkpoints, TensorBoard scalars,
exports and ``summary.json``. Console output belongs to the caller: progress is reported through
a :class:`Reporter` (the job puts a tqdm bar behind it on rank 0).

Resume restores the trainable tensors, optimizer, schedule, step, sample count, every rank's RNG
state (same world size) and the "before" evaluation. The data stream is infinite and seeded with
``run.seed``; a resumed run passes over the ``step × grad_accum`` batches already trained on (read
again, not trained on), so stop + resume gives the weights of an uninterrupted run (same world
size and data loader workers). Checkpoint cadence, logging and optimizer groups:
:mod:`pipelines.train.base`.
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ovseg import mpt_export
from ovseg.atomic import save_torch
from pipelines.pairs.stream import make_loader
from pipelines.train import checkpoint as ckpt
from pipelines.train import setup
from pipelines.train.base import Reporter, TrainerBase
from pipelines.train.config import TuneConfig
from pipelines.train.dist import World, all_gather_objects, all_sum, gather_with_local_grad
from pipelines.train.evaluate import crop_accuracy
from pipelines.train.losses import contrastive_loss, vocab_ce_loss

log = logging.getLogger(__name__)


class _Forward(nn.Module):
    """What DDP wraps: crops (+ masks) → normalised features and the logit scale."""

    def __init__(self, model: nn.Module, use_prompt: bool) -> None:
        super().__init__()
        self.model, self.use_prompt = model, use_prompt

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_image(images, masks if self.use_prompt else None), self.model.logit_scale


def _autocast(cfg: TuneConfig, device: torch.device):
    bf16 = cfg.optim.precision == "bf16" or (cfg.optim.precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


class Tuner(TrainerBase):
    """One tuning run in one process; build, then call :meth:`run`."""

    def __init__(self, cfg: TuneConfig, world: World, reporter: Reporter | None = None) -> None:
        super().__init__(cfg, world, reporter)
        torch.manual_seed(cfg.run.seed + world.rank)
        self.plan = setup.plan_data(cfg, world)  # fails fast on missing shards
        self.model, self.bundle = setup.build_model(cfg, world.device)
        self.use_prompt = cfg.optim.mode != "finetune"
        self.trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = setup.build_optimizer(self.model, cfg)
        self.schedule = setup.build_schedule(self.optimizer, cfg.optim.warmup_steps, self.plan.total_steps)
        self.autocast = _autocast(cfg, world.device)
        self.train_text = setup.text_cache(self.bundle, cfg.loss.text_prompt)
        self.eval_text = setup.text_cache(self.bundle, "vild" if cfg.eval.templates == "vild" else "noun")
        self.results: dict[str, Any] = {}
        self.skips: collections.Counter = collections.Counter()
        self.damaged_checkpoints: list[str] = []  # newer checkpoints skipped on resume (damaged)

    # ---------------------------------------------------------------- state
    def resume(self) -> None:
        """Load ``run.resume`` (``auto``: the latest checkpoint in ``out_dir``, if any)."""
        found = ckpt.resolve_resume(self.cfg.run.resume, self.out)
        if found is None:
            return
        source, state, damaged = found
        self.damaged_checkpoints = [str(p) for p, _ in damaged]
        missing = set(self.trainable) - set(state["trainable"])
        if missing:
            raise ValueError(f"{source} lacks trainable tensors {sorted(missing)[:3]} (mode changed?)")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                self.trainable[name].copy_(value)
        self.results = dict(state.get("results", {}))
        self.restore_state(source, state)

    def save(self) -> None:
        """Checkpoint: the trainable tensors and the results so far, plus the common state."""
        self.save_state(ckpt.FORMAT, {"trainable": {n: p.detach().cpu() for n, p in self.trainable.items()},
                                      "results": self.results})

    def evaluate(self, use_prompt: bool) -> dict[str, float] | None:
        stream = setup.eval_stream(self.cfg, self.plan, self.bundle, world=self.world)
        if stream is None:
            return None
        return crop_accuracy(self.model, make_loader(stream, self.cfg.data.workers), self.eval_text.embed,
                             world=self.world, use_prompt=use_prompt, max_samples=self.cfg.eval.max_samples,
                             autocast=self.autocast)

    # ---------------------------------------------------------------- training
    def _micro_step(self, net: nn.Module, batch: dict, sync: bool) -> tuple[float, float]:
        """Forward + backward of one micro-batch; returns (loss, accuracy) of this process."""
        cfg, world = self.cfg, self.world
        images = batch["images"].to(world.device, non_blocking=True)
        masks = batch["masks"].to(world.device, non_blocking=True)
        with (contextlib.nullcontext() if sync else net.no_sync()):
            with self.autocast():
                feats, logit_scale = net(images, masks)
            all_nouns = [n for part in all_gather_objects(batch["nouns"], world) for n in part]
            if cfg.loss.name == "vocab_ce":
                vocab = sorted(set(all_nouns))
                loss, acc = vocab_ce_loss(feats, batch["nouns"], vocab, text_features=self.train_text.embed(vocab),
                                          logit_scale=logit_scale)
            else:
                loss, acc = contrastive_loss(gather_with_local_grad(feats.float(), world),
                                             self.train_text.embed(all_nouns), logit_scale)
            (loss / cfg.optim.grad_accum).backward()
        return float(loss.detach()), float(acc)

    def train(self) -> dict[str, Any]:
        """Optimizer steps from ``self.step`` to the end or ``run.stop_at``; returns loss stats."""
        cfg, world = self.cfg, self.world
        net: nn.Module = _Forward(self.model, self.use_prompt)
        ddp = world.distributed and bool(self.trainable)
        if ddp:
            net = DistributedDataParallel(net, device_ids=[world.device.index] if world.device.type == "cuda" else None)
        stream = setup.train_stream(cfg, self.plan, self.bundle, world=world, seed=cfg.run.seed,
                                    skip_batches=self.step * cfg.optim.grad_accum)
        batches = iter(make_loader(stream, cfg.data.workers))
        stop = min(self.plan.total_steps, cfg.run.stop_at or self.plan.total_steps)
        history: list[float] = []
        seconds = 0.0
        if self.reporter:
            self.reporter.start(stop, self.step)
        while self.step < stop:
            t0 = time.perf_counter()
            lr = self.schedule.get_last_lr()[0]
            loss_sum = acc_sum = 0.0
            for micro in range(cfg.optim.grad_accum):
                batch = next(batches)
                self.skips.update(batch["skips"])
                loss, acc = self._micro_step(net, batch, sync=not ddp or micro == cfg.optim.grad_accum - 1)
                loss_sum, acc_sum = loss_sum + loss, acc_sum + acc
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), cfg.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step()
            with torch.no_grad():
                self.model.logit_scale.clamp_(0, math.log(100))  # OVSeg / CLIP clamp
            self.step += 1
            self.samples += self.plan.global_batch
            seconds += time.perf_counter() - t0
            loss, acc = (v / cfg.optim.grad_accum / world.size for v in all_sum([loss_sum, acc_sum], world))
            history.append(loss)
            metrics = {"loss": loss, "acc": acc, "lr": lr,
                       "logit_scale": float(self.model.logit_scale.detach().exp()),
                       "samples_per_s": len(history) * self.plan.global_batch / max(seconds, 1e-9)}
            self.log_step(metrics, stop)
            if cfg.eval.every_steps and self.step % cfg.eval.every_steps == 0 and self.step < stop:
                result = self.results[f"eval_step_{self.step}"] = self.evaluate(self.use_prompt)
                if self.writer and result:
                    self.writer.add_scalar("eval/top1", result["top1"], self.step)
            if self.save_due(stop):
                self.save()
        if self.reporter:
            self.reporter.close()
        del batches  # stops the loader's worker processes
        return {"loss_history": history, "first_loss": history[0] if history else None,
                "last_loss": history[-1] if history else None, "train_seconds": seconds,
                "samples_per_s": len(history) * self.plan.global_batch / max(seconds, 1e-9)}

    # ---------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        """Resume, evaluate before, train, evaluate after, export; returns the summary."""
        cfg, world = self.cfg, self.world
        self.resume()
        resumed_from = self.step
        if cfg.eval.before and "eval_before" not in self.results:
            self.results["eval_before"] = self.evaluate(use_prompt=False)
        stats = self.train()
        finished = self.step >= self.plan.total_steps
        if finished:
            self.results["eval_after"] = self.evaluate(self.use_prompt)
        exports = export(cfg, self.model, self.out) if finished and world.is_main else {}
        skips: collections.Counter = collections.Counter()
        for part in all_gather_objects(dict(self.skips), world):
            skips.update(part)
        summary = {
            "mode": cfg.optim.mode, "loss_name": cfg.loss.name,
            "clip": f"{cfg.clip.model}/{cfg.clip.pretrained or cfg.clip.checkpoint}",
            "world_size": world.size, "device": str(world.device), "resumed_from_step": resumed_from,
            "step": self.step, "total_steps": self.plan.total_steps, "finished": finished,
            "samples_seen": self.samples, "global_batch": self.plan.global_batch,
            "steps_per_epoch": self.plan.steps_per_epoch, **stats, "skipped": dict(skips),
            "checkpoint": str(ckpt.latest_checkpoint(self.out)), "damaged_checkpoints": self.damaged_checkpoints,
            "exports": exports, **self.results,
        }
        if world.is_main:
            if self.writer:
                for key in ("eval_before", "eval_after"):
                    if summary.get(key):
                        self.writer.add_scalar(f"eval/{key}_top1", summary[key]["top1"], self.step)
                self.writer.close()
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def run(cfg: TuneConfig, world: World, reporter: Reporter | None = None) -> dict[str, Any]:
    """Tune, evaluate and export; returns the summary (the same on every rank)."""
    return Tuner(cfg, world, reporter).run()


def export(cfg: TuneConfig, model: nn.Module, out: Path) -> dict[str, str]:
    """Write the portable prompt file, the tuned CLIP (fine-tuning modes) and the OVSeg layout."""
    folder = out / "export"
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    clip_sd = None
    clip_file = None
    # CLIP weights travel with the export unless they are a public pretrained tag left untouched
    if cfg.optim.mode != "mpt" or cfg.clip.checkpoint or not cfg.clip.pretrained:
        clip_sd = {k: v.detach().cpu() for k, v in model.clip.state_dict().items()}
        clip_file = "clip_weights.pt"
        save_torch(clip_sd, folder / clip_file)
        paths["clip"] = str(folder / clip_file)
    use_prompt = cfg.optim.mode != "finetune"
    if use_prompt:
        info = mpt_export.describe(model, cfg.clip.model, cfg.clip.pretrained,
                                   clip_checkpoint=clip_file, mode=cfg.optim.mode)
        paths["prompt"] = str(mpt_export.save_prompt(info, folder / "mpt_prompt.pt"))
    ovseg = mpt_export.save_ovseg(folder / "ovseg_clip_adapter.pth",
                                  model.mask_embedding if use_prompt else None, clip_sd)
    paths["ovseg"] = str(ovseg)
    return paths
