"""The tuning run: resume, evaluate before, train, checkpoint, evaluate after, export, summarise.

:func:`run` is called in every torchrun process; rank 0 writes checkpoints, TensorBoard scalars,
exports and ``summary.json``. Console output belongs to the caller: progress is reported through
a :class:`Reporter` (the job puts a tqdm bar behind it on rank 0).

Resume restores the trainable tensors, optimizer, schedule, step, sample count, every rank's RNG
state (same world size) and the "before" evaluation. The data stream is infinite and restarts with
the seed ``run.seed + 7919 * step``: a resumed run sees a fresh shuffle, not the exact sample order
an uninterrupted run would have seen.
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ovseg import mpt_export
from pipelines.config import as_dict
from pipelines.pair_data import make_loader
from pipelines.train import checkpoint as ckpt
from pipelines.train import setup
from pipelines.train.config import TuneConfig
from pipelines.train.dist import World, all_gather_objects, all_sum, barrier, gather_with_local_grad
from pipelines.train.evaluate import crop_accuracy
from pipelines.train.losses import contrastive_loss, vocab_ce_loss

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def start(self, total: int, initial: int) -> None: ...
    def step(self, step: int, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


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


def run(cfg: TuneConfig, world: World, reporter: Reporter | None = None) -> dict[str, Any]:
    """Tune, evaluate and export; returns the summary (the same on every rank)."""
    out = Path(cfg.run.out_dir)
    torch.manual_seed(cfg.run.seed + world.rank)
    plan = setup.plan_data(cfg, world)  # fails fast on missing shards
    model, bundle = setup.build_model(cfg, world.device)
    use_prompt = cfg.optim.mode != "finetune"
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = setup.build_optimizer(model, cfg)
    schedule = setup.build_schedule(optimizer, cfg.optim.warmup_steps, plan.total_steps)
    autocast = _autocast(cfg, world.device)
    train_text = setup.text_cache(bundle, cfg.loss.text_prompt)
    eval_text = setup.text_cache(bundle, "vild" if cfg.eval.templates == "vild" else "noun")

    # ---- resume
    step, samples, results = 0, 0, {}
    source = {"auto": ckpt.latest_checkpoint(out), "never": None}.get(cfg.run.resume, cfg.run.resume)
    if source is not None:
        state = ckpt.load_checkpoint(source)
        missing = set(trainable) - set(state["trainable"])
        if missing:
            raise ValueError(f"{source} lacks trainable tensors {sorted(missing)[:3]} (mode changed?)")
        with torch.no_grad():
            for name, value in state["trainable"].items():
                trainable[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        step, samples, results = state["step"], state["samples"], dict(state.get("results", {}))
        if state.get("world_size") == world.size:
            ckpt.set_rng_state(state["rng"][world.rank])
        else:
            log.warning("world size changed (%s -> %d): RNG state not restored", state.get("world_size"), world.size)
        log.info("resumed from %s at step %d", source, step)
    resumed_from = step

    writer = None
    if world.is_main and cfg.run.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))

    def evaluate(use: bool) -> dict[str, float] | None:
        stream = setup.eval_stream(cfg, plan, bundle, world)
        if stream is None:
            return None
        return crop_accuracy(model, make_loader(stream, cfg.data.workers), lambda v: eval_text.embed(v), world,
                             use_prompt=use, max_samples=cfg.eval.max_samples, autocast=autocast)

    if cfg.eval.before and "eval_before" not in results:
        results["eval_before"] = evaluate(use=False)

    # ---- train
    net: nn.Module = _Forward(model, use_prompt)
    if world.distributed and trainable:
        net = DistributedDataParallel(net, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    stream = setup.train_stream(cfg, plan, bundle, world, seed=cfg.run.seed + 7919 * step)
    batches = iter(make_loader(stream, cfg.data.workers))
    stop = min(plan.total_steps, cfg.run.stop_at or plan.total_steps)
    skips: collections.Counter = collections.Counter()
    first_loss = last_loss = None
    history: list[float] = []
    train_seconds, trained_samples = 0.0, 0
    if reporter:
        reporter.start(stop, step)

    def save() -> None:
        rng = all_gather_objects(ckpt.rng_state(), world)
        if world.is_main:
            state = {"format": ckpt.FORMAT, "step": step, "samples": samples,
                     "trainable": {n: p.detach().cpu() for n, p in trainable.items()},
                     "optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict(),
                     "rng": rng, "world_size": world.size, "config": as_dict(cfg), "results": results}
            ckpt.save_atomic(state, ckpt.checkpoint_path(out, step))
            ckpt.prune(out, cfg.run.keep_last)
        barrier(world)

    while step < stop:
        t0 = time.perf_counter()
        loss_sum = acc_sum = 0.0
        for micro in range(cfg.optim.grad_accum):
            batch = next(batches)
            skips.update(batch["skips"])
            images = batch["images"].to(world.device, non_blocking=True)
            masks = batch["masks"].to(world.device, non_blocking=True)
            sync = micro == cfg.optim.grad_accum - 1 or not isinstance(net, DistributedDataParallel)
            with (contextlib.nullcontext() if sync else net.no_sync()):
                with autocast():
                    feats, logit_scale = net(images, masks)
                all_nouns = [n for part in all_gather_objects(batch["nouns"], world) for n in part]
                if cfg.loss.name == "vocab_ce":
                    vocab = sorted(set(all_nouns))
                    loss, acc = vocab_ce_loss(feats, batch["nouns"], vocab, train_text.embed(vocab), logit_scale)
                else:
                    loss, acc = contrastive_loss(gather_with_local_grad(feats.float(), world),
                                                 train_text.embed(all_nouns), logit_scale)
                (loss / cfg.optim.grad_accum).backward()
            loss_sum += float(loss.detach())
            acc_sum += float(acc)
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(list(trainable.values()), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # OVSeg / CLIP clamp
        step += 1
        samples += plan.global_batch
        train_seconds += time.perf_counter() - t0
        trained_samples += plan.global_batch
        loss_avg, acc_avg = (v / cfg.optim.grad_accum / world.size
                             for v in all_sum([loss_sum, acc_sum], world))
        first_loss = loss_avg if first_loss is None else first_loss
        last_loss = loss_avg
        history.append(loss_avg)
        metrics = {"loss": loss_avg, "acc": acc_avg, "lr": schedule.get_last_lr()[0],
                   "logit_scale": float(model.logit_scale.detach().exp()),
                   "samples_per_s": trained_samples / max(train_seconds, 1e-9)}
        if writer and (step % cfg.run.log_every == 0 or step == stop):
            for key, value in metrics.items():
                writer.add_scalar(f"train/{key}", value, step)
        if reporter:
            reporter.step(step, metrics)
        if cfg.eval.every_steps and step % cfg.eval.every_steps == 0 and step < stop:
            results[f"eval_step_{step}"] = evaluate(use=use_prompt)
            if writer:
                writer.add_scalar("eval/top1", results[f"eval_step_{step}"]["top1"], step)
        if step % cfg.run.save_every == 0 or step == stop:
            save()
    if reporter:
        reporter.close()
    del batches  # stops the loader's worker processes

    # ---- evaluate after, export, summary
    finished = step >= plan.total_steps
    if finished:
        results["eval_after"] = evaluate(use=use_prompt)
    exports = export(cfg, model, out) if finished and world.is_main else {}
    skip_total = collections.Counter()
    for part in all_gather_objects(dict(skips), world):
        skip_total.update(part)
    summary = {
        "mode": cfg.optim.mode, "loss_name": cfg.loss.name, "clip": f"{cfg.clip.model}/{cfg.clip.pretrained or cfg.clip.checkpoint}",
        "world_size": world.size, "device": str(world.device), "resumed_from_step": resumed_from,
        "step": step, "total_steps": plan.total_steps, "finished": finished,
        "samples_seen": samples, "global_batch": plan.global_batch, "steps_per_epoch": plan.steps_per_epoch,
        "first_loss": first_loss, "last_loss": last_loss, "loss_history": history,
        "train_seconds": train_seconds, "samples_per_s": trained_samples / max(train_seconds, 1e-9),
        "skipped": dict(skip_total), "checkpoint": str(ckpt.latest_checkpoint(out)),
        "exports": exports, **results,
    }
    if world.is_main:
        if writer:
            for key in ("eval_before", "eval_after"):
                if summary.get(key):
                    writer.add_scalar(f"eval/{key}_top1", summary[key]["top1"], step)
            writer.close()
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


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
        ckpt.save_atomic(clip_sd, folder / clip_file)
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
