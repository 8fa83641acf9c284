"""Binary masks: COCO segmentation decoding and mask IoU (the one copy of each)."""
from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = ["decode_segmentation", "mask_iou"]


def decode_segmentation(seg: list | dict, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) → bool mask ``[H, W]``."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
    return mask_utils.decode(rle).astype(bool)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU between ``[N,P]`` and ``[M,P]`` bool masks (flattened pixels) → ``[N,M]`` float."""
    af, bf = a.float(), b.float()
    inter = af @ bf.T
    union = af.sum(1, keepdim=True) + bf.sum(1)[None] - inter
    return inter / union.clamp(min=1)
