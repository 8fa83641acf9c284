"""Proposal filtering shared by the backends: mask IoU, small/huge-mask filtering, greedy de-duplication."""
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
