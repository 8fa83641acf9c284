"""Hungarian matching of predicted masks to ground-truth segments (MaskFormer's set prediction).

For each image, the cost of assigning query ``q`` to target ``n`` is

    cost_class · (−p_q(label_n)) + cost_mask · focal_or_bce(mask_q, mask_n) + cost_dice · dice(mask_q, mask_n)

(MaskFormer's ``HungarianMatcher``; OVSeg keeps its weights 1 / 20 / 1 with the focal mask cost) and
``scipy.optimize.linear_sum_assignment`` picks the one-to-one assignment of least total cost. The
targets are brought to the prediction's resolution (nearest neighbour) for the cost only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

MASK_COSTS = ("focal", "bce")


@dataclass(kw_only=True)
class MatchCosts:
    """Weights of the three matching costs (MaskFormer / OVSeg defaults)."""

    cost_class: float = 1.0  # weight of −p(target class)
    cost_mask: float = 20.0  # weight of the per-pixel mask cost
    cost_dice: float = 1.0  # weight of the dice cost
    mask_cost: str = "focal"  # focal (MaskFormer / OVSeg) | bce (Mask2Former)
    focal_alpha: float = 0.25  # focal loss alpha
    focal_gamma: float = 2.0  # focal loss gamma

    def __post_init__(self) -> None:
        if self.mask_cost not in MASK_COSTS:
            raise ValueError(f"mask_cost must be one of {MASK_COSTS}, not {self.mask_cost!r}")


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss of every prediction against every target.

    Args:
        logits: ``[Q,P]`` mask logits (P pixels).
        targets: ``[N,P]`` float 0/1.

    Returns:
        ``[Q,N]``: ``1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1)`` with ``p = sigmoid(logits)``.
    """
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy of every prediction ``[Q,P]`` against every target ``[N,P]`` → ``[Q,N]``."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


def pairwise_focal_cost(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25,
                        gamma: float = 2.0) -> torch.Tensor:
    """Mean per-pixel sigmoid focal loss of every prediction ``[Q,P]`` against every target ``[N,P]`` → ``[Q,N]``."""
    probs = logits.sigmoid()
    pos = alpha * (1 - probs) ** gamma * F.binary_cross_entropy_with_logits(
        logits, torch.ones_like(logits), reduction="none")
    neg = (1 - alpha) * probs ** gamma * F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


def cost_matrix(class_logits: torch.Tensor, mask_logits: torch.Tensor, labels: torch.Tensor, *,
                masks: torch.Tensor, costs: MatchCosts) -> torch.Tensor:
    """The matching cost of one image.

    Args:
        class_logits: ``[Q,K+1]`` (last column = no object).
        mask_logits: ``[Q,h,w]``.
        labels: ``[N]`` long, in ``0..K-1``.
        masks: ``[N,H,W]`` bool or float (any resolution; resized to ``h×w`` nearest).
        costs: the weights.

    Returns:
        ``[Q,N]`` float.
    """
    probs = class_logits.float().softmax(-1)
    cost = -costs.cost_class * probs[:, labels]
    tgt = masks.float()
    if tgt.shape[-2:] != mask_logits.shape[-2:]:
        tgt = F.interpolate(tgt[:, None], size=mask_logits.shape[-2:], mode="nearest")[:, 0]
    pred = mask_logits.float().flatten(1)
    tgt = tgt.flatten(1)
    if costs.mask_cost == "focal":
        mask_cost = pairwise_focal_cost(pred, tgt, alpha=costs.focal_alpha, gamma=costs.focal_gamma)
    else:
        mask_cost = pairwise_bce_cost(pred, tgt)
    return cost + costs.cost_mask * mask_cost + costs.cost_dice * pairwise_dice_cost(pred, tgt)


@torch.no_grad()
def hungarian_match(pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[dict[str, torch.Tensor]], *,
                    costs: MatchCosts | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One-to-one assignment of queries to targets, per image.

    Args:
        pred_logits: ``[B,Q,K+1]``.
        pred_masks: ``[B,Q,h,w]`` mask logits.
        targets: B dicts with ``"labels"`` ``[N_b]`` long and ``"masks"`` ``[N_b,H,W]``.
        costs: matching weights (default :class:`MatchCosts`).

    Returns:
        B pairs ``(query_indices [M_b], target_indices [M_b])`` (long, CPU, sorted by query),
        ``M_b = min(Q, N_b)``.
    """
    costs = costs or MatchCosts()
    out = []
    for b, target in enumerate(targets):
        if len(target["labels"]) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            out.append((empty, empty))
            continue
        c = cost_matrix(pred_logits[b], pred_masks[b], target["labels"], masks=target["masks"], costs=costs)
        rows, cols = linear_sum_assignment(c.cpu().numpy())
        out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return out
