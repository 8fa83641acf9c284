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
    world: World,
    use_prompt: bool = True,
    max_samples: int = 5000,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Zero-shot accuracy of ``model`` on masked crops.

    Args:
        model: prompted CLIP (with ``use_prompt=False`` the plain image tower is used).
        batches: this process's share of the held-out set (:class:`~pipelines.pair_data.PairStream`
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
