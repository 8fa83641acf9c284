"""Proposal filtering, the one rule every backend and the mining pipeline use: area range,
ranking by score, greedy de-duplication, top-k (:func:`select_proposals`)."""
from __future__ import annotations

import torch

from ovseg.masks import mask_iou


def area_in_range(masks: torch.Tensor, *, min_frac: float = 0.0, max_frac: float = 1.0) -> torch.Tensor:
    """``[N,H,W]`` (or ``[N,P]``) bool masks → ``[N]`` bool: area fraction within ``[min_frac, max_frac]``
    (an empty mask never passes)."""
    flat = masks.flatten(1)
    frac = flat.sum(1).float() / max(1, flat.shape[1])
    return (frac >= min_frac) & (frac <= max_frac) & (frac > 0)


def greedy_dedup(masks: torch.Tensor, *, iou_threshold: float, max_keep: int | None = None) -> list[int]:
    """Indices of masks kept by greedy de-duplication in the given order.

    A mask is dropped when its IoU with an already kept one exceeds ``iou_threshold``; at most
    ``max_keep`` are kept. ``masks``: ``[N,H,W]`` or ``[N,P]`` bool, best first.
    """
    if len(masks) == 0:
        return []
    flat = masks.flatten(1)
    iou = mask_iou(flat, flat).cpu().numpy()
    kept: list[int] = []
    for i in range(len(flat)):
        if not kept or iou[i, kept].max() <= iou_threshold:
            kept.append(i)
        if max_keep is not None and len(kept) >= max_keep:
            break
    return kept


def select_proposals(masks: torch.Tensor, scores: torch.Tensor, *, keep: torch.Tensor | None = None,
                     iou_threshold: float = 1.0, max_keep: int | None = None) -> torch.Tensor:
    """Indices of the proposals kept, best first: the one selection rule.

    Among ``keep`` (``[N]`` bool, e.g. :func:`area_in_range`; None = all), proposals are ranked by
    ``scores`` (``[N]``, highest first, ties in the given order); a mask whose IoU with a better kept
    one exceeds ``iou_threshold`` is dropped (``>= 1``: none is); at most ``max_keep`` are kept.
    ``masks``: ``[N,H,W]`` or ``[N,P]`` bool. Returns ``[K]`` long.
    """
    index = keep.nonzero().flatten() if keep is not None else torch.arange(len(scores))
    index = index[scores[index].argsort(descending=True, stable=True)]
    if iou_threshold < 1.0:
        return index[greedy_dedup(masks[index], iou_threshold=iou_threshold, max_keep=max_keep)]
    return index if max_keep is None else index[:max_keep]
