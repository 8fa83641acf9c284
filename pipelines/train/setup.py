"""Building blocks of a tuning run: model, optimizer, schedule, data streams."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from ovseg.clip import ClipBundle, TextEmbeddingCache, templates_named
from ovseg.mpt import MaskPromptCLIP
from ovseg.mpt_export import load_prompt
from pipelines.pairs.stream import PairSource, PairStream, epoch_samples, make_source
from pipelines.train.base import param_groups
from pipelines.train.config import TuneConfig
from pipelines.train.dist import World

log = logging.getLogger(__name__)


def build_model(cfg: TuneConfig, device: torch.device) -> tuple[MaskPromptCLIP, ClipBundle]:
    """CLIP (frozen as the mode asks) + mask prompt, on ``device``."""
    bundle = cfg.clip.load(device=device)
    model = MaskPromptCLIP(bundle.model, depth=cfg.prompt.depth, init=cfg.prompt.init,  # type: ignore[arg-type]
                           init_std=cfg.prompt.init_std)
    if cfg.prompt.init_from:
        export = load_prompt(cfg.prompt.init_from)
        if export.mask_embedding.shape != model.mask_embedding.shape:
            raise ValueError(f"{cfg.prompt.init_from}: prompt {tuple(export.mask_embedding.shape)} "
                             f"does not fit {tuple(model.mask_embedding.shape)}")
        with torch.no_grad():
            model.mask_embedding.copy_(export.mask_embedding)
        log.info("mask prompt initialised from %s", cfg.prompt.init_from)
    model.to(device)
    model.set_trainable(cfg.optim.mode, train_logit_scale=cfg.optim.train_logit_scale)
    model.eval()
    if cfg.optim.mode != "mpt":
        model.clip.visual.train()
    if cfg.optim.grad_checkpointing:
        model.clip.visual.set_grad_checkpointing(True)
    return model, bundle


def text_cache(bundle: ClipBundle, prompt: str) -> TextEmbeddingCache:
    """Frozen-text embeddings per noun with the prompt ensemble ``prompt`` (``ovseg.clip.TEMPLATE_SETS``)."""
    return TextEmbeddingCache(bundle, templates=templates_named(prompt))


def _no_decay(name: str, p: nn.Parameter) -> bool:
    """Gains, biases, the logit scale and the mask prompt get no weight decay (OVSeg's rule)."""
    return (p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
            or "mask_embedding" in name)


def build_optimizer(model: nn.Module, cfg: TuneConfig) -> torch.optim.AdamW:
    o = cfg.optim
    return torch.optim.AdamW(param_groups(model, o.weight_decay, _no_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)


def build_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class DataPlan:
    sources: list[PairSource]
    samples_per_epoch: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int


def plan_data(cfg: TuneConfig, world: World) -> DataPlan:
    sources = [make_source(s.urls, s.weight, s.storage_options, filter=cfg.data.filter) for s in cfg.data.sources]
    samples = cfg.data.samples_per_epoch or epoch_samples(sources, cfg.data.holdout_percent)
    if not samples:
        raise ValueError("epoch size unknown (no sizes.json next to the shards): set data.samples_per_epoch")
    global_batch = cfg.data.batch_size * world.size * cfg.optim.grad_accum
    steps_per_epoch = max(1, samples // global_batch)
    total = cfg.optim.max_steps or max(1, math.ceil(cfg.optim.epochs * steps_per_epoch))
    return DataPlan(sources, samples, global_batch, steps_per_epoch, total)


def train_stream(cfg: TuneConfig, plan: DataPlan, bundle: ClipBundle, *, world: World, seed: int,
                 skip_batches: int = 0) -> PairStream:
    """The training stream of this rank; ``skip_batches`` passes over the batches a resumed run already trained on."""
    return PairStream(
        plan.sources, batch_size=cfg.data.batch_size, image_size=bundle.image_size, mean=bundle.mean,
        std=bundle.std, rank=world.rank, world_size=world.size, seed=seed,
        shuffle_buffer=cfg.data.shuffle_buffer, infinite=True,
        holdout_percent=cfg.data.holdout_percent, split="train", skip_batches=skip_batches,
    )


def eval_stream(cfg: TuneConfig, plan: DataPlan, bundle: ClipBundle, *, world: World) -> PairStream | None:
    """Held-out pairs: ``eval.urls`` if given, else the held-out share of the training sources."""
    if cfg.eval.urls:
        sources, holdout, split = [make_source(cfg.eval.urls, storage_options=cfg.data.storage_options)], 0.0, "all"
    elif cfg.data.holdout_percent > 0:
        sources, holdout, split = plan.sources, cfg.data.holdout_percent, "eval"
    else:
        return None
    return PairStream(
        sources, batch_size=cfg.eval.batch_size, image_size=bundle.image_size, mean=bundle.mean,
        std=bundle.std, rank=world.rank, world_size=world.size, infinite=False,
        holdout_percent=holdout, split=split,
    )


def storage_check(sources: list[tuple[str, str, dict | None]]) -> str | None:
    """The first ``(config key, shard spec, storage options)`` whose shards cannot be listed, as one line
    (:func:`pipelines.storage.urls.storage_problem`), or None. For :func:`pipelines.train.dist.checked_once`."""
    from pipelines.pairs.format import shard_urls
    from pipelines.storage.urls import storage_problem

    for key, spec, options in sources:
        try:
            shard_urls(spec, options or None)
        except Exception as err:  # noqa: BLE001 - any failure to list is the user's URL or credentials
            log.debug("listing %s failed", spec, exc_info=True)
            return storage_problem(err, key=key, url=spec)
    return None


def tune_sources(cfg: TuneConfig) -> list[tuple[str, str, dict | None]]:
    """``(config key, spec, storage options)`` of every shard source a tuning run reads."""
    out = []
    for i, source in enumerate(cfg.data.sources):
        key = "data.urls" if cfg.data.urls and len(cfg.data.sources) == 1 else f"data.sources[{i}].urls"
        out.append((key, source.urls, source.storage_options))
    if cfg.eval.urls:
        out.append(("eval.urls", cfg.eval.urls, cfg.data.storage_options))
    return out
