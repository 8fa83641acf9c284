"""MaskFormer's set-prediction loss: class cross-entropy + mask (focal or BCE) + dice, with deep supervision.

After :func:`~ovseg.maskformer.matcher.hungarian_match`, every matched query is trained towards its
target's class and mask; unmatched queries towards the no-object class (last column), whose
cross-entropy weight is ``no_object_weight`` (0.1, MaskFormer / OVSeg). Mask losses are computed on
the matched masks only, with the predictions upsampled (bilinear) to the targets' resolution, and
divided by ``num_masks`` (the average number of targets per process in distributed training, so
every process's gradient has the same scale). The same loss is added for every intermediate decoder
layer (``aux_outputs``), each with its own matching.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ovseg.maskformer.matcher import MASK_COSTS, MatchCosts, hungarian_match


@dataclass(kw_only=True)
class LossWeights:
    """Loss weights (OVSeg's MaskFormer config: class 1, mask 20, dice 1, no-object 0.1, focal masks)."""

    class_weight: float = 1.0  # weight of the classification cross-entropy
    mask_weight: float = 20.0  # weight of the per-pixel mask loss
    dice_weight: float = 1.0  # weight of the dice loss
    no_object_weight: float = 0.1  # cross-entropy weight of the no-object class
    mask_loss: str = "focal"  # focal (MaskFormer / OVSeg) | bce
    deep_supervision: bool = True  # add the loss of every intermediate decoder layer
    matcher: MatchCosts = field(default_factory=MatchCosts)  # matching costs

    def __post_init__(self) -> None:
        if self.mask_loss not in MASK_COSTS:
            raise ValueError(f"mask_loss must be one of {MASK_COSTS}, not {self.mask_loss!r}")


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """``Σ_m [1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1)] / num_masks`` for ``[M,P]`` logits and 0/1 targets."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float, *, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Per-pixel focal loss, averaged over the P pixels of each mask, summed over masks, / num_masks.

    ``[M,P]`` logits and 0/1 targets; ``alpha`` weighs the positives (``1 − alpha`` the negatives).
    """
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(-1).sum() / num_masks


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Per-pixel BCE, averaged over the pixels of each mask, summed over masks, / num_masks (``[M,P]``)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1).sum() / num_masks


def classification_loss(pred_logits: torch.Tensor, matches: list[tuple[torch.Tensor, torch.Tensor]],
                        targets: list[dict[str, torch.Tensor]], *, no_object_weight: float) -> torch.Tensor:
    """Weighted cross-entropy over all queries: matched → target class, unmatched → no object.

    Args:
        pred_logits: ``[B,Q,K+1]``.
        matches: per image ``(query indices, target indices)``.
        targets: per image ``{"labels": [N]}``.
        no_object_weight: the class weight of column K (the others weigh 1).

    Returns:
        scalar: ``Σ w_y·CE / Σ w_y`` (PyTorch's weighted mean, as MaskFormer).
    """
    b, q, k1 = pred_logits.shape
    classes = torch.full((b, q), k1 - 1, dtype=torch.long, device=pred_logits.device)
    for i, ((rows, cols), target) in enumerate(zip(matches, targets)):
        classes[i, rows.to(classes.device)] = target["labels"][cols].to(classes.device)
    weight = torch.ones(k1, device=pred_logits.device)
    weight[-1] = no_object_weight
    return F.cross_entropy(pred_logits.float().transpose(1, 2), classes, weight)


def mask_losses(pred_masks: torch.Tensor, matches: list[tuple[torch.Tensor, torch.Tensor]],
                targets: list[dict[str, torch.Tensor]], *, num_masks: float,
                weights: LossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask loss, dice loss) of the matched queries.

    Args:
        pred_masks: ``[B,Q,h,w]`` logits; upsampled (bilinear) to the targets' ``H×W``.
        matches / targets: as :func:`classification_loss` (targets also carry ``"masks"`` ``[N,H,W]``).
        num_masks: the normaliser.
    """
    src = [pred_masks[i, rows.to(pred_masks.device)] for i, (rows, _) in enumerate(matches)]
    tgt = [t["masks"][cols.to(t["masks"].device)] for (_, cols), t in zip(matches, targets)]
    src_all = torch.cat(src)
    if src_all.shape[0] == 0:
        zero = pred_masks.sum() * 0.0  # keeps the graph (DDP needs every parameter used)
        return zero, zero
    tgt_all = torch.cat(tgt).to(pred_masks.device).float()
    src_all = F.interpolate(src_all[:, None].float(), size=tgt_all.shape[-2:], mode="bilinear",
                            align_corners=False)[:, 0]
    src_flat, tgt_flat = src_all.flatten(1), tgt_all.flatten(1)
    if weights.mask_loss == "focal":
        mask = sigmoid_focal_loss(src_flat, tgt_flat, num_masks, alpha=weights.matcher.focal_alpha,
                                  gamma=weights.matcher.focal_gamma)
    else:
        mask = sigmoid_bce_loss(src_flat, tgt_flat, num_masks)
    return mask, dice_loss(src_flat, tgt_flat, num_masks)


def layer_losses(outputs: dict[str, torch.Tensor], targets: list[dict[str, torch.Tensor]], *, num_masks: float,
                 weights: LossWeights) -> dict[str, torch.Tensor]:
    """``{"loss_ce", "loss_mask", "loss_dice"}`` (unweighted) of one decoder layer's outputs."""
    matches = hungarian_match(outputs["pred_logits"].detach(), outputs["pred_masks"].detach(), targets,
                              costs=weights.matcher)
    mask, dice = mask_losses(outputs["pred_masks"], matches, targets, num_masks=num_masks, weights=weights)
    ce = classification_loss(outputs["pred_logits"], matches, targets, no_object_weight=weights.no_object_weight)
    return {"loss_ce": ce, "loss_mask": mask, "loss_dice": dice}


def set_criterion(outputs: dict, targets: list[dict[str, torch.Tensor]], *, weights: LossWeights | None = None,
                  num_masks: float | None = None) -> dict[str, torch.Tensor]:
    """The full loss of one batch.

    Args:
        outputs: the model's dict: ``"pred_logits"`` ``[B,Q,K+1]``, ``"pred_masks"`` ``[B,Q,h,w]``,
            optional ``"aux_outputs"`` (list of dicts with the same keys).
        targets: B dicts ``{"labels": [N] long in 0..K-1, "masks": [N,H,W] bool}``.
        weights: loss weights (default :class:`LossWeights`).
        num_masks: normaliser of the mask losses; default: the number of targets in this batch (≥ 1).

    Returns:
        ``"loss"`` (the weighted total to backpropagate) and the unweighted parts of the last layer
        (``loss_ce``, ``loss_mask``, ``loss_dice``) and of each aux layer (``loss_ce_0``, ...).
    """
    weights = weights or LossWeights()
    if num_masks is None:
        num_masks = float(sum(len(t["labels"]) for t in targets))
    num_masks = max(float(num_masks), 1.0)
    parts = layer_losses(outputs, targets, num_masks=num_masks, weights=weights)
    if weights.deep_supervision:
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            parts.update({f"{k}_{i}": v for k, v in layer_losses(aux, targets, num_masks=num_masks,
                                                                  weights=weights).items()})
    factor = {"loss_ce": weights.class_weight, "loss_mask": weights.mask_weight, "loss_dice": weights.dice_weight}
    total = sum(factor[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v for k, v in parts.items())
    return {"loss": total, **parts}
