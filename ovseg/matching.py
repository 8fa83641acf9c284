"""From a noun × mask similarity matrix to (mask, noun) pairs, OVSeg-style.

For every noun of an image the mask with the highest CLIP similarity among the masks that are
large enough is its candidate; the candidate becomes a pair when its similarity clears
``min_score`` and beats the best *other* noun on the same mask by at least ``min_margin``.
Everything that decided a pair (score, runner-up noun and its score, margin, area) is recorded,
and every rejection is counted by reason.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(kw_only=True)
class MatchParams:
    """Thresholds of the matching step.

    Attributes:
        min_score: minimum cosine similarity between the crop and the noun's text embedding.
        min_area: minimum mask area in pixels (masks below it never take part).
        min_area_frac: minimum mask area as a fraction of the image (combined with ``min_area``).
        min_margin: minimum lead of the noun over the runner-up noun on the chosen mask; with one
            noun there is no runner-up and the margin test passes.
    """

    min_score: float = 0.0
    min_area: int = 0
    min_area_frac: float = 0.0
    min_margin: float = 0.0


@dataclass
class Pair:
    """One accepted (mask, noun) pair and why it was accepted."""

    noun_index: int
    noun: str
    mask_index: int
    score: float
    runner_up_noun: str | None
    runner_up_score: float | None
    margin: float | None
    area: int


def match_pairs(
    sim: torch.Tensor,
    nouns: Sequence[str],
    areas: torch.Tensor,
    *,
    params: MatchParams,
    image_area: int | None = None,
) -> tuple[list[Pair], Counter]:
    """Pick the best mask per noun and keep the pairs that clear the thresholds.

    Args:
        sim: ``[K,N]`` cosine similarities (K nouns, N masks).
        nouns: the K nouns.
        areas: ``[N]`` mask areas in pixels.
        params: thresholds.
        image_area: H·W of the source image, needed for ``min_area_frac``.

    Returns:
        ``(pairs, rejected)``: accepted pairs in noun order, and a Counter of rejection reasons
        (``no_large_mask``, ``low_score``, ``low_margin``).
    """
    k, n = sim.shape
    if k != len(nouns) or areas.shape != (n,):
        raise ValueError(f"sim {tuple(sim.shape)} does not fit {len(nouns)} nouns / areas {tuple(areas.shape)}")
    rejected: Counter = Counter()
    min_area = float(params.min_area)
    if image_area is not None:
        min_area = max(min_area, params.min_area_frac * image_area)
    large = areas.to(sim.device).float() >= min_area  # [N]
    pairs: list[Pair] = []
    if k == 0:
        return pairs, rejected
    if n == 0 or not bool(large.any()):
        rejected["no_large_mask"] += k
        return pairs, rejected
    masked_sim = sim.float().masked_fill(~large[None], float("-inf"))
    best_score, best_mask = masked_sim.max(dim=1)  # [K]
    for i in range(k):
        j = int(best_mask[i])
        score = float(best_score[i])
        runner_noun = runner_score = margin = None
        if k > 1:
            column = sim[:, j].float().clone()
            column[i] = float("-inf")
            r = int(column.argmax())
            runner_noun, runner_score = nouns[r], float(column[r])
            margin = score - runner_score
        if score < params.min_score:
            rejected["low_score"] += 1
            continue
        if margin is not None and margin < params.min_margin:
            rejected["low_margin"] += 1
            continue
        pairs.append(Pair(i, nouns[i], j, score, runner_noun, runner_score, margin, int(areas[j])))
    return pairs, rejected
