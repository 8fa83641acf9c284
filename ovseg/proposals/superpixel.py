"""Weight-free region proposals from multi-scale superpixels (scikit-image).

Felzenszwalb's graph segmentation at several scales gives segments from fine to coarse; every
segment is a candidate mask. Work happens on a copy downscaled to ``work_size`` (longest side) and
masks are scaled back with nearest neighbour. Near-duplicates (IoU above ``dedup_iou``) are dropped
and tiny or near-full-image regions are filtered by area fraction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import felzenszwalb
from skimage.transform import resize

from ovseg.proposals.base import ImageContext, Proposals
from ovseg.proposals.filtering import select_proposals


@dataclass
class SuperpixelProposals:
    """Multi-scale Felzenszwalb segments as proposals.

    Args:
        scales: Felzenszwalb ``scale`` values, fine to coarse.
        sigma: Gaussian pre-smoothing.
        min_size_frac: Felzenszwalb ``min_size`` as a fraction of the working image's pixels.
        min_area_frac / max_area_frac: keep segments whose area fraction is in this range.
        dedup_iou: drop a segment whose IoU with an earlier kept one exceeds this.
        max_proposals: keep at most this many (largest first).
        work_size: longest side of the working copy.
    """

    scales: list[float] = field(default_factory=lambda: [100.0, 300.0, 800.0])
    sigma: float = 0.8
    min_size_frac: float = 0.002
    min_area_frac: float = 0.01
    max_area_frac: float = 0.95
    dedup_iou: float = 0.9
    max_proposals: int = 64
    work_size: int = 256
    name: str = "superpixel"

    def __call__(self, image: np.ndarray, context: ImageContext | None = None) -> Proposals:
        """``[H,W,3]`` uint8 → :class:`Proposals` with ``[N,H,W]`` masks."""
        h, w = image.shape[:2]
        factor = min(1.0, self.work_size / max(h, w))
        small = image
        if factor < 1.0:
            size = (max(1, round(h * factor)), max(1, round(w * factor)))
            small = (resize(image, size, anti_aliasing=True, preserve_range=True)).astype(np.uint8)
        n_pix = small.shape[0] * small.shape[1]
        segments = []
        for scale in self.scales:
            labels = felzenszwalb(
                small, scale=scale, sigma=self.sigma, min_size=max(1, int(self.min_size_frac * n_pix))
            )
            lab = torch.from_numpy(labels.astype(np.int64)).flatten()
            frac = torch.bincount(lab).float() / n_pix  # area fraction per label
            keep = ((frac >= self.min_area_frac) & (frac <= self.max_area_frac)).nonzero().flatten()
            segments.append(lab[None] == keep[:, None])  # [S,P] only for labels in the area range
        cand = torch.cat(segments)
        kept = select_proposals(cand, cand.sum(1), iou_threshold=self.dedup_iou, max_keep=self.max_proposals)
        masks = cand[kept].view(len(kept), *small.shape[:2])
        if factor < 1.0 and len(kept):
            masks = F.interpolate(masks[:, None].float(), size=(h, w), mode="nearest")[:, 0] > 0.5
        if len(kept) == 0:
            return Proposals.empty(h, w)
        return Proposals(masks, torch.ones(len(kept)))
