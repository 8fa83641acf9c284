"""Semantic-segmentation metrics from a confusion matrix (mIoU, fwIoU, pixel accuracy, mean accuracy).

Ground-truth pixels equal to ``ignore_index`` are skipped. A prediction may also be
``ignore_index`` ("no proposal covers this pixel"): it is kept as an extra, never-correct column,
so such pixels count as misses of their ground-truth class rather than vanishing.
IoU of a class is ``TP / (TP + FP + FN)``; mIoU averages over classes whose union is non-empty
(classes absent from both ground truth and prediction are NaN and left out), as in detectron2 / mmseg.
fwIoU weights each class's IoU by its share of the ground-truth pixels (detectron2's ``fwIoU``).
Matrices of several processes or shards add up (:meth:`ConfusionMatrix.merge`).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ConfusionMatrix", "miou"]


class ConfusionMatrix:
    """Accumulates ``[C, C+1]`` counts: rows = ground truth, columns = prediction (last = none).

    Args:
        num_classes: C.
        ignore_index: label value skipped in the ground truth / meaning "no prediction" in ``pred``.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> None:
        """Add one label map pair, both ``[H, W]`` integer (values 0..C-1 or ``ignore_index``)."""
        p = _np(pred).astype(np.int64).ravel()
        g = _np(gt).astype(np.int64).ravel()
        if p.shape != g.shape:
            raise ValueError(f"pred {tuple(_np(pred).shape)} and gt {tuple(_np(gt).shape)} differ")
        keep = g != self.ignore_index
        p, g = p[keep], g[keep]
        if g.size and (g.min() < 0 or g.max() >= self.num_classes):
            bad = int(g.max()) if g.max() >= self.num_classes else int(g.min())
            raise ValueError(f"ground-truth label {bad} outside 0..{self.num_classes - 1} "
                             f"(ignore = {self.ignore_index})")
        p = np.where((p < 0) | (p >= self.num_classes), self.num_classes, p)
        self.mat += np.bincount(g * (self.num_classes + 1) + p,
                                minlength=self.num_classes * (self.num_classes + 1)
                                ).reshape(self.num_classes, self.num_classes + 1)

    def per_class_iou(self) -> np.ndarray:
        """``[C]`` IoU per class, NaN where the class is in neither ground truth nor prediction."""
        tp = np.diag(self.mat[:, : self.num_classes]).astype(float)
        gt = self.mat.sum(axis=1).astype(float)
        pred = self.mat[:, : self.num_classes].sum(axis=0).astype(float)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def merge(self, other: "ConfusionMatrix | np.ndarray") -> None:
        """Add another matrix of the same shape (another shard's counts)."""
        mat = other.mat if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if mat.shape != self.mat.shape:
            raise ValueError(f"confusion matrices {mat.shape} and {self.mat.shape} differ")
        self.mat += mat.astype(np.int64)

    def group_miou(self, classes: list[int]) -> float:
        """mIoU over a subset of classes (NaN classes left out; NaN when none is defined)."""
        iou = self.per_class_iou()[list(classes)]
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def compute(self) -> dict:
        """``{"mIoU", "fwIoU", "pixel_acc", "mean_acc", "iou": [C], "acc": [C], "gt_pixels": [C]}``;
        ratios in 0..1 (NaN when undefined)."""
        tp = np.diag(self.mat[:, : self.num_classes]).astype(float)
        gt = self.mat.sum(axis=1).astype(float)
        iou = self.per_class_iou()
        total = gt.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(gt > 0, tp / gt, np.nan)
        present = gt > 0
        return {
            "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "fwIoU": float((gt[present] / total * iou[present]).sum()) if total else float("nan"),
            "pixel_acc": float(tp.sum() / total) if total else float("nan"),
            "mean_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "iou": iou.tolist(),
            "acc": acc.tolist(),
            "gt_pixels": gt.astype(np.int64).tolist(),
        }


def miou(preds: list, gts: list, num_classes: int, *, ignore_index: int = 255) -> float:
    """mIoU of paired ``[H, W]`` label maps (convenience wrapper around :class:`ConfusionMatrix`)."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    for p, g in zip(preds, gts):
        cm.update(p, g)
    return cm.compute()["mIoU"]


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
