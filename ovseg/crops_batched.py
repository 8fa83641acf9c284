"""OVSeg's masked crops of all masks of an image at once, as matrix products (no loop per mask).

Bicubic resizing (PyTorch's ``F.interpolate(mode="bicubic", align_corners=False)``, A = -0.75,
edge pixels repeated) is separable: a box of the image resized to ``S×S`` is ``Wy @ region @ Wxᵀ``
with ``Wy [S,H]`` and ``Wx [S,W]`` holding the cubic weights of the box's rows and columns. The
fill outside the mask is linear too: ``where(m, img, fill) = fill + m·(img − fill)``, so every
crop is ``fill + Wy_m @ (m·(img − fill)) @ Wx_mᵀ``, one batched matmul for all masks; the crop
masks (nearest neighbour) are one gather. Equal to :func:`ovseg.crops.masked_crops` up to float
rounding (tested), and a handful of kernels per image on a GPU instead of five per mask.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ovseg.crops import MEAN_FILL_255, MaskedCrops, expand_boxes, mask_boxes

_A = -0.75  # PyTorch's bicubic constant


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """``[...]`` fractional offsets → ``[...,4]`` weights of taps -1, 0, +1, +2."""
    def near(x):  # |x| <= 1
        return ((_A + 2) * x - (_A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


def bicubic_matrices(start: torch.Tensor, length: torch.Tensor, size: int, *, full: int) -> torch.Tensor:
    """``[M,S,full]`` weights resizing ``[start, start+length)`` of an axis of ``full`` pixels to ``size``.

    Args:
        start / length: ``[M]`` long, the boxes along this axis.
    """
    m = start.shape[0]
    dst = torch.arange(size, device=start.device, dtype=torch.float32)
    scale = length.float()[:, None] / size
    real = scale * (dst + 0.5) - 0.5  # [M,S]
    base = real.floor()
    weights = _cubic_weights(real - base)  # [M,S,4]
    taps = base.long()[..., None] + torch.arange(-1, 3, device=start.device)  # [M,S,4]
    taps = torch.minimum(taps.clamp(min=0), (length - 1)[:, None, None]) + start[:, None, None]
    out = torch.zeros(m, size, full, device=start.device, dtype=torch.float32)
    return out.scatter_add_(2, taps, weights)


def nearest_index(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """``[M,S]`` source pixel of each output pixel, as ``F.interpolate(mode="nearest")`` picks it."""
    dst = torch.arange(size, device=start.device, dtype=torch.float32)
    scale = length.float()[:, None] / size
    src = (dst * scale).floor().long()
    return torch.minimum(src, (length - 1)[:, None]) + start[:, None]


def masked_crops_batched(
    image: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    *,
    fill: Sequence[float] = MEAN_FILL_255,
    threshold: float = 0.5,
    expand_ratio: float = 1.0,
    max_elements: int = 1 << 25,
) -> MaskedCrops:
    """:func:`ovseg.crops.masked_crops` for all masks at once (same arguments and result).

    Args:
        image: ``[3,H,W]`` uint8 or float 0..255. masks: ``[N,H,W]`` bool or float.
        max_elements: bound on the ``[chunk,3,H,W]`` float buffer; masks are taken in chunks.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3,H,W], got {tuple(image.shape)}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape[1:]:
        raise ValueError(f"masks must be [N,H,W] matching image {tuple(image.shape[1:])}, got {tuple(masks.shape)}")
    binary = masks if masks.dtype == torch.bool else masks > threshold
    valid = binary.flatten(1).any(dim=1)
    binary = binary[valid]
    height, width = image.shape[1:]
    boxes = expand_boxes(mask_boxes(binary), expand_ratio, height=height, width=width)
    fill_t = torch.tensor(list(fill), dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
    centred = image.float()[None] - fill_t  # [1,3,H,W]
    x0, y0, x1, y1 = boxes.unbind(1)
    crops, crop_masks = [], []
    chunk = max(1, max_elements // (3 * height * width))
    for lo in range(0, binary.shape[0], chunk):
        part = slice(lo, lo + chunk)
        wy = bicubic_matrices(y0[part], (y1 - y0)[part], size, full=height)  # [m,S,H]
        wx = bicubic_matrices(x0[part], (x1 - x0)[part], size, full=width)  # [m,S,W]
        inside = binary[part][:, None].float() * centred  # [m,3,H,W]
        crops.append(wy[:, None] @ inside @ wx[:, None].transpose(-1, -2) + fill_t)
        ys, xs = nearest_index(y0[part], (y1 - y0)[part], size), nearest_index(x0[part], (x1 - x0)[part], size)
        rows = torch.arange(ys.shape[0], device=image.device)[:, None, None]
        crop_masks.append(binary[part][rows, ys[:, :, None], xs[:, None, :]][:, None])
    if crops:
        crops_t, masks_t = torch.cat(crops), torch.cat(crop_masks)
    else:
        crops_t = image.new_zeros(0, 3, size, size, dtype=torch.float32)
        masks_t = torch.zeros(0, 1, size, size, dtype=torch.bool, device=image.device)
    return MaskedCrops(crops_t, masks_t, boxes, valid, binary.flatten(1).sum(dim=1))
