"""Masked-crop zero-shot accuracy on held-out pair shards.

Every held-out crop is classified over the vocabulary of nouns present in the evaluated set
(gathered over all processes), with prompt-ensembled text embeddings, like OVSeg's mask
classification at test time. Reported: top-1 / top-5 accuracy, sample count, vocabulary size and
chance level (1 / vocabulary size).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, ContextManager, Iterable

import torch

from ovseg.mpt import MaskPromptCLIP
from pipelines.train.dist import World, all_gather_objects, all_sum

log = logging.getLogger(__name__)


@torch.no_grad()
def crop_accuracy(
    model: MaskPromptCLIP,
    batches: Iterable[dict],
    embed_nouns: Callable[[list[str]], torch.Tensor],
    *,
    world: World,
    use_prompt: bool = True,
    max_samples: int = 5000,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Zero-shot accuracy of ``model`` on masked crops.

    Args:
        model: prompted CLIP (with ``use_prompt=False`` the plain image tower is used).
        batches: this process's share of the held-out set (:class:`~pipelines.pairs.stream.PairStream`
            items with ``images [B,3,S,S]``, ``masks [B,1,S,S]``, ``nouns``).
        embed_nouns: ``K`` nouns → ``[K,D]`` L2-normalised text embeddings.
        world: process group info; all processes must call this together.
        max_samples: evaluate at most this many crops in total (split evenly over processes).

    Returns:
        ``{"top1", "top5", "samples", "vocab", "chance", "skipped"}``.
    """
    was_training = model.training
    model.eval()
    device = world.device
    limit = max(1, max_samples // world.size)
    feats: list[torch.Tensor] = []
    nouns: list[str] = []
    skipped = 0
    for batch in batches:
        skipped += sum(batch["skips"].values())
        take = min(len(batch["nouns"]), limit - len(nouns))
        if take <= 0:
            break
        images = batch["images"][:take].to(device, non_blocking=True)
        masks = batch["masks"][:take].to(device, non_blocking=True) if use_prompt else None
        with autocast():
            f = model.encode_image(images, masks)
        feats.append(f.float().cpu())
        nouns.extend(batch["nouns"][:take])
    vocab = sorted(set().union(*all_gather_objects(set(nouns), world)))
    top1 = top5 = 0.0
    if nouns:
        text = embed_nouns(vocab).float().cpu()  # [K,D]
        sims = torch.cat(feats) @ text.T  # [N,K]
        labels = torch.tensor([vocab.index(n) for n in nouns])
        ranked = sims.topk(min(5, len(vocab)), dim=-1).indices
        top1 = float((ranked[:, 0] == labels).sum())
        top5 = float((ranked == labels[:, None]).any(-1).sum())
    top1, top5, n, skipped = all_sum([top1, top5, float(len(nouns)), float(skipped)], world)
    model.train(was_training)
    return {
        "top1": top1 / max(n, 1.0),
        "top5": top5 / max(n, 1.0),
        "samples": int(n),
        "vocab": len(vocab),
        "chance": 1.0 / max(len(vocab), 1),
        "skipped": int(skipped),
    }


def evaluate_shards(cfg, world: World) -> dict:
    """Standalone evaluation (``jobs/evaluate_crops.py``): plain CLIP and, with a prompt file,
    CLIP + mask prompt on the same crops. ``cfg`` is an ``EvalCropsConfig``."""
    from ovseg.clip import load_clip
    from ovseg.mpt_export import load_prompted_clip
    from pipelines.pairs.stream import PairStream, make_loader, make_source
    from pipelines.train.setup import text_cache

    if cfg.prompt_file:
        model, bundle = load_prompted_clip(cfg.prompt_file, load_clip, device=str(world.device))
        name = f"{bundle.name}/{bundle.pretrained or bundle.checkpoint}"
    else:
        bundle = cfg.clip.load(device=world.device)
        model = MaskPromptCLIP(bundle.model, depth=1, init="zeros").to(world.device)
        name = f"{cfg.clip.model}/{cfg.clip.pretrained or cfg.clip.checkpoint}"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and world.device.type == "cuda")
    autocast = (lambda: torch.autocast(world.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    texts = text_cache(bundle, "vild" if cfg.eval.templates == "vild" else "noun")
    source = make_source(cfg.urls, storage_options=cfg.storage_options)

    def once(use_prompt: bool) -> dict[str, float]:
        stream = PairStream([source], batch_size=cfg.eval.batch_size, image_size=bundle.image_size,
                            mean=bundle.mean, std=bundle.std, rank=world.rank, world_size=world.size,
                            infinite=False, holdout_percent=cfg.holdout_percent,
                            split="eval" if cfg.holdout_percent > 0 else "all")
        return crop_accuracy(model, make_loader(stream, cfg.workers), texts.embed, world=world,
                             use_prompt=use_prompt, max_samples=cfg.eval.max_samples, autocast=autocast)

    result = {"clip": name, "urls": cfg.urls, "plain": once(False)}
    if cfg.prompt_file:
        result["prompted"] = once(True)
    return result
