"""OVSeg's mask → CLIP-input recipe, on tensors.

For each mask: threshold it, take its tight bounding box (optionally expanded), cut the box out of
the image, replace every pixel outside the mask by a fill colour (CLIP's mean colour by default),
and resize the region to the CLIP input size (bicubic for the pixels, nearest for the mask). This is
what OVSeg's ``MaskFormerClipAdapter`` does before its CLIP forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ovseg.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

#: CLIP's mean colour on the 0..255 scale, OVSeg's default fill for pixels outside the mask.
MEAN_FILL_255: tuple[float, float, float] = tuple(255.0 * c for c in OPENAI_CLIP_MEAN)  # type: ignore


@dataclass
class MaskedCrops:
    """Masked, resized regions of one image.

    Attributes:
        crops: ``[M,3,S,S]`` float, 0..255 scale (bicubic may overshoot slightly), M = valid masks.
        masks: ``[M,1,S,S]`` bool, the mask resized with nearest neighbour, aligned with ``crops``.
        boxes: ``[M,4]`` long ``x0, y0, x1, y1`` in source pixels, x1/y1 exclusive.
        valid: ``[N]`` bool, which input masks were non-empty after thresholding (M = valid.sum()).
        areas: ``[M]`` long, mask pixel counts in the source image.
    """

    crops: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    valid: torch.Tensor
    areas: torch.Tensor


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of non-empty boolean masks.

    Args:
        masks: ``[N,H,W]`` bool, every mask non-empty.

    Returns:
        ``[N,4]`` long ``x0, y0, x1, y1`` with x1/y1 exclusive.
    """
    if masks.numel() == 0:
        return torch.zeros(0, 4, dtype=torch.long, device=masks.device)
    rows = masks.any(dim=2)  # [N,H]
    cols = masks.any(dim=1)  # [N,W]
    h, w = masks.shape[1:]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1) + 1
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1) + 1
    return torch.stack([x0, y0, x1, y1], dim=1)


def expand_boxes(boxes: torch.Tensor, ratio: float, height: int, *, width: int) -> torch.Tensor:
    """Scale ``[N,4]`` boxes about their centres by ``ratio`` and clip them to the image.

    As ov-seg's ``clip_adapter/utils.py`` ``expand_box`` + ``crop_with_mask``: the scaled corners are
    truncated with ``int()`` (toward zero), then clipped to ``0..width`` / ``0..height``.
    """
    if ratio == 1.0:
        return boxes
    b = boxes.double()
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) * ratio / 2, (b[:, 3] - b[:, 1]) * ratio / 2
    out = torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=1).trunc().long()
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def context_masks(masks: torch.Tensor, ratio: float, *, threshold: float = 0.5) -> torch.Tensor:
    """Each mask's tight box scaled by ``ratio`` about its centre, as a filled rectangle.

    Cutting these with :func:`masked_crops` (``expand_ratio=1``) gives the *context view* of a
    mask: the expanded box with its surroundings kept (nothing is filled).

    Args:
        masks: ``[N,H,W]`` bool, or float thresholded with ``> threshold``.

    Returns:
        ``[N,H,W]`` bool; an empty mask stays empty.
    """
    binary = masks if masks.dtype == torch.bool else masks > threshold
    out = torch.zeros_like(binary)
    valid = binary.flatten(1).any(dim=1)
    height, width = binary.shape[1:]
    boxes = expand_boxes(mask_boxes(binary[valid]), ratio, height=height, width=width)
    for i, (x0, y0, x1, y1) in zip(valid.nonzero().flatten().tolist(), boxes.tolist()):
        out[i, y0:y1, x0:x1] = True
    return out


def masked_crops(
    image: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    *,
    fill: Sequence[float] = MEAN_FILL_255,
    threshold: float = 0.5,
    expand_ratio: float = 1.0,
) -> MaskedCrops:
    """Cut every mask out of ``image`` the OVSeg way.

    Args:
        image: ``[3,H,W]`` uint8 or float on the 0..255 scale.
        masks: ``[N,H,W]`` bool, or float soft masks thresholded with ``> threshold``.
        size: output side S (the CLIP input size).
        fill: colour (0..255 per channel) for pixels outside the mask.
        threshold: binarisation threshold for float masks.
        expand_ratio: box scale about its centre before cropping (OVSeg default 1.0).

    Returns:
        :class:`MaskedCrops` for the non-empty masks.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3,H,W], got {tuple(image.shape)}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape[1:]:
        raise ValueError(f"masks must be [N,H,W] matching image {tuple(image.shape[1:])}, got {tuple(masks.shape)}")
    binary = masks if masks.dtype == torch.bool else masks > threshold
    valid = binary.flatten(1).any(dim=1)
    binary = binary[valid]
    img = image.float()
    height, width = image.shape[1:]
    boxes = expand_boxes(mask_boxes(binary), expand_ratio, height=height, width=width)
    fill_t = torch.tensor(list(fill), dtype=img.dtype, device=img.device).view(3, 1, 1)
    crops, crop_masks = [], []
    for (x0, y0, x1, y1), m in zip(boxes.tolist(), binary):
        region_mask = m[y0:y1, x0:x1]
        region = torch.where(region_mask, img[:, y0:y1, x0:x1], fill_t)
        crops.append(F.interpolate(region[None], size=(size, size), mode="bicubic", align_corners=False))
        crop_masks.append(F.interpolate(region_mask[None, None].float(), size=(size, size), mode="nearest") > 0.5)
    if crops:
        crops_t, masks_t = torch.cat(crops), torch.cat(crop_masks)
    else:
        crops_t = img.new_zeros(0, 3, size, size)
        masks_t = torch.zeros(0, 1, size, size, dtype=torch.bool, device=img.device)
    return MaskedCrops(crops_t, masks_t, boxes, valid, binary.flatten(1).sum(dim=1))


def normalize(
    crops: torch.Tensor,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """``[N,3,S,S]`` 0..255 crops → CLIP-normalised ``[N,3,S,S]`` (mean/std given on 0..1)."""
    m = torch.tensor(list(mean), dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(list(std), dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1) * 255.0
    return (crops - m) / s


def to_uint8_image(crop: torch.Tensor) -> torch.Tensor:
    """``[3,S,S]`` float 0..255 (may overshoot) → ``[S,S,3]`` uint8 for saving."""
    return crop.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
