"""The MaskFormer training run: vocabulary embeddings, resume, train with DDP, checkpoint, export.

:func:`run` is called in every torchrun process; rank 0 writes checkpoints, TensorBoard scalars,
the export and ``summary.json``. Checkpoints reuse the tuning job's helpers
(:mod:`pipelines.train.checkpoint`: atomic writes, discovery, RNG state) with their own format tag.
Resume restores the weights, optimizer, schedule, step and every rank's RNG state (same world
size); the data order restarts with the seed ``run.seed + 7919 * step`` (a fresh shuffle, as the
tuning job does).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ovseg.atomic import save_torch
from ovseg.clip import VILD_TEMPLATES, TextEmbeddingCache
from ovseg.maskformer.config import get_spec
from ovseg.maskformer.losses import set_criterion
from ovseg.maskformer.model import build_maskformer
from ovseg.maskformer.weights import load_maskformer, save_maskformer
from pipelines.train import checkpoint as ckpt
from pipelines.train.base import Reporter, TrainerBase, param_groups
from pipelines.train.dist import World, all_sum
from pipelines.train.maskformer_config import TrainMaskFormerConfig
from pipelines.train.segments import SegmentDataset, endless_batches
from pipelines.train.setup import build_schedule

log = logging.getLogger(__name__)

FORMAT = "ovseg-maskformer-train/1"
LOGGED = ("loss", "loss_ce", "loss_mask", "loss_dice")


def vocabulary_embeddings(cfg: TrainMaskFormerConfig, names: list[str]) -> torch.Tensor:
    """``[K,D]`` L2-normalised CLIP text embeddings of ``names`` (the CLIP is dropped afterwards)."""
    bundle = cfg.clip.load()
    templates = VILD_TEMPLATES if cfg.clip.templates == "vild" else ("{}",)
    return TextEmbeddingCache(bundle, templates=templates).embed(names).cpu()


def _no_decay(name: str, p: nn.Parameter) -> bool:
    """Norms, biases, embeddings (queries, no-object) and the temperature get no weight decay."""
    return p.ndim < 2 or "norm" in name or "bias" in name or "embed" in name or "logit_scale" in name


def build_optimizer(model: nn.Module, cfg: TrainMaskFormerConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay, _no_decay), lr=cfg.optim.lr)


class MaskFormerTrainer(TrainerBase):
    """One training run in one process; build, then call :meth:`run`."""

    def __init__(self, cfg: TrainMaskFormerConfig, world: World, reporter: Reporter | None = None) -> None:
        super().__init__(cfg, world, reporter)
        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
        d = cfg.data
        self.data = SegmentDataset(d.instances_url, d.images_url, unseen=d.unseen, image_size=d.image_size,
                                   hflip=d.hflip, storage_options=d.storage_options)
        self.text = vocabulary_embeddings(cfg, self.data.names)
        self.spec = get_spec(cfg.model.spec, **{**cfg.model.overrides, "clip_text_dim": self.text.shape[1]})
        self.model = build_maskformer(self.spec)
        if cfg.model.init_from:
            self._init_from(cfg.model.init_from)
        self.model.set_train_text_embeddings(self.text)
        self.model.to(world.device).train()
        self.text = self.text.to(world.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.schedule = build_schedule(self.optimizer, cfg.optim.warmup_steps, cfg.optim.max_steps)
        self.global_batch = d.batch_size * world.size

    # ---------------------------------------------------------------- state
    def _init_from(self, path: str) -> None:
        """Copy the weights of a saved model of the same spec (not its optimizer or schedule)."""
        start = load_maskformer(path)
        if start.spec != self.spec:
            raise ValueError(f"{path} holds a model of another spec than {self.cfg.model.spec} + overrides")
        self.model.load_state_dict(start.state_dict())
        log.info("initialised from %s", path)

    def resume(self) -> None:
        """Load ``run.resume`` (``auto``: the latest checkpoint in ``out_dir``, if any)."""
        found = ckpt.resolve_resume(self.cfg.run.resume, self.out, fmt=FORMAT)
        if found is None:
            return
        source, state, _ = found  # damaged newer checkpoints were skipped and logged
        if state["vocabulary"] != self.data.names:
            raise ValueError(f"{source} was trained on another vocabulary ({len(state['vocabulary'])} names)")
        self.model.load_state_dict(state["model"])
        self.restore_state(source, state)

    def save(self) -> None:
        """Checkpoint: the model and its vocabulary, plus the common state."""
        self.save_state(FORMAT, {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                                 "vocabulary": list(self.data.names)})

    # ---------------------------------------------------------------- training
    def train(self) -> dict[str, Any]:
        """Optimizer steps from ``self.step`` to ``optim.max_steps`` or ``run.stop_at``; returns loss stats."""
        cfg, world = self.cfg, self.world
        net: nn.Module = self.model
        if world.distributed:
            net = DistributedDataParallel(self.model,
                                          device_ids=[world.device.index] if world.device.type == "cuda" else None)
        batches = endless_batches(self.data, batch_size=cfg.data.batch_size, workers=cfg.data.workers,
                                  rank=world.rank, world_size=world.size, seed=cfg.run.seed + 7919 * self.step)
        stop = min(cfg.optim.max_steps, cfg.run.stop_at or cfg.optim.max_steps)
        history: list[dict[str, float]] = []
        seconds = 0.0
        if self.reporter:
            self.reporter.start(stop, self.step)
        while self.step < stop:
            t0 = time.perf_counter()
            batch = next(batches)
            lr = self.schedule.get_last_lr()[0]
            images = self.model.normalize(batch["images"].to(world.device))
            targets = [{k: v.to(world.device) for k, v in t.items()} for t in batch["targets"]]
            local_masks = float(sum(len(t["labels"]) for t in targets))
            num_masks = all_sum([local_masks], world)[0] / world.size  # MaskFormer: average over processes
            outputs = net(images, self.text)
            parts = set_criterion(outputs, targets, weights=cfg.loss, num_masks=num_masks)
            parts["loss"].backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step()
            self.step += 1
            self.samples += self.global_batch
            seconds += time.perf_counter() - t0
            values = all_sum([float(parts[k].detach()) for k in LOGGED], world)
            metrics = {k: v / world.size for k, v in zip(LOGGED, values)}
            history.append(metrics)
            metrics = {**metrics, "lr": lr, "images_per_s": len(history) * self.global_batch / max(seconds, 1e-9)}
            self.log_step(metrics, stop)
            if self.save_due(stop):
                self.save()
        if self.reporter:
            self.reporter.close()
        del batches
        return {"loss_history": [h["loss"] for h in history], "first": history[0] if history else None,
                "last": _mean_tail(history), "train_seconds": seconds,
                "images_per_s": len(history) * self.global_batch / max(seconds, 1e-9)}

    # ---------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        """Resume, train, export; returns the summary."""
        cfg, world = self.cfg, self.world
        self.resume()
        resumed_from = self.step
        stats = self.train()
        finished = self.step >= cfg.optim.max_steps
        export = Path(cfg.run.export or self.out / "export" / "maskformer.pt")
        if finished and world.is_main:
            save_maskformer(self.model, export, meta={"vocabulary": list(self.data.names),
                                                      "unseen": list(self.data.unseen), "step": self.step})
            if cfg.run.export_dtype == "fp16":
                halve_weights(export)
        summary = {
            "spec": cfg.model.spec, "world_size": world.size, "device": str(world.device),
            "resumed_from_step": resumed_from, "step": self.step, "total_steps": cfg.optim.max_steps,
            "finished": finished, "samples_seen": self.samples, "global_batch": self.global_batch,
            "images": len(self.data), "vocabulary": self.data.names, "unseen": self.data.unseen,
            "dropped_annotations": dict(self.data.dropped),
            "parameters": sum(p.numel() for p in self.model.parameters()), **stats,
            "checkpoint": str(ckpt.latest_checkpoint(self.out)), "export": str(export) if finished else None,
        }
        if world.is_main:
            if self.writer:
                self.writer.close()
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def halve_weights(path: str | Path) -> None:
    """Rewrite a saved model file with its floating-point tensors in fp16 (atomically)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["model"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    save_torch(payload, path)


def _mean_tail(history: list[dict[str, float]], n: int = 20) -> dict[str, float] | None:
    """Mean of each logged loss over the last ``n`` steps."""
    if not history:
        return None
    tail = history[-n:]
    return {k: sum(h[k] for h in tail) / len(tail) for k in LOGGED}


def run(cfg: TrainMaskFormerConfig, world: World, reporter: Reporter | None = None) -> dict[str, Any]:
    """Train and export; returns the summary (the same on every rank)."""
    return MaskFormerTrainer(cfg, world, reporter).run()
