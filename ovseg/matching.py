"""From a noun × mask similarity matrix to (mask, noun) pairs.

Three strategies decide which mask a noun takes, among the masks that are large enough:

* ``best_mask`` (OVSeg's): every noun independently takes its most similar mask, so two nouns may
  take one mask;
* ``one_to_one``: an assignment over the noun × mask matrix that maximises the summed similarity
  (scipy's ``linear_sum_assignment``): a mask carries at most one noun, and with more nouns than
  masks the nouns left without a mask are rejected (``no_mask_left``);
* ``dual_softmax``: the product of the noun-over-masks and the mask-over-nouns softmax of the
  similarities (divided by ``temperature``); every noun takes the mask with the highest product,
  which must reach ``min_prob``.

The chosen mask becomes a pair when its similarity clears ``min_score`` and beats the best *other*
noun on the same mask by at least ``min_margin``. Everything that decided a pair (strategy, score,
runner-up noun and its score, margin, area, the strategy's own numbers) is recorded, and every
rejection is counted by reason.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import torch

STRATEGIES = ("best_mask", "one_to_one", "dual_softmax")


@dataclass(kw_only=True)
class MatchParams:
    """How nouns take masks, and the thresholds a pair must clear (the mining job's ``matching`` section)."""

    strategy: str = "one_to_one"  # one_to_one (assignment: a mask carries at most one noun; best in the world bench) | best_mask (OVSeg: each noun its best mask) | dual_softmax
    min_score: float = 0.2  # cosine similarity floor (real CLIP ViT-B/16 scale)
    min_margin: float = 0.0  # lead over the runner-up noun on the chosen mask (passes with one noun)
    min_area: int = 256  # minimum mask area in pixels (smaller masks never take part)
    min_area_frac: float = 0.001  # minimum mask area as a fraction of the image (combined with min_area)
    temperature: float = 0.01  # dual_softmax: similarities are divided by this before both softmaxes (CLIP's logit scale 100)
    min_prob: float = 0.0  # dual_softmax: minimum noun-over-masks x mask-over-nouns probability of the chosen mask

    def problems(self) -> list[tuple[str, str]]:
        """``[(field, what is wrong)]``; empty when the parameters are usable."""
        out = []
        if self.strategy not in STRATEGIES:
            out.append(("strategy", " | ".join(STRATEGIES)))
        if not -1.0 <= self.min_score <= 1.0:
            out.append(("min_score", "must be in [-1, 1]"))
        if self.min_area < 0:
            out.append(("min_area", "must be >= 0"))
        if not 0.0 <= self.min_area_frac < 1.0:
            out.append(("min_area_frac", "must be in [0, 1)"))
        if self.temperature <= 0:
            out.append(("temperature", "must be > 0"))
        if not 0.0 <= self.min_prob <= 1.0:
            out.append(("min_prob", "must be in [0, 1]"))
        return out


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
    strategy: str = "best_mask"
    evidence: dict = field(default_factory=dict)  # the strategy's own numbers for this pair
    candidates: int = 0  # masks large enough to take part (what a random choice would pick among)


def large_masks(areas: torch.Tensor, params: MatchParams, image_area: int | None = None) -> torch.Tensor:
    """``[N]`` bool: the masks whose area clears ``min_area`` and ``min_area_frac`` × ``image_area``."""
    min_area = float(params.min_area)
    if image_area is not None:
        min_area = max(min_area, params.min_area_frac * image_area)
    return areas.float() >= min_area


def _choose(sim: torch.Tensor, large: torch.Tensor, params: MatchParams) -> tuple[list[int | None], list[dict]]:
    """The mask index each noun takes (None: none left) and the strategy's numbers per noun.

    Args:
        sim: ``[K,N]`` float similarities; large: ``[N]`` bool with at least one True.
    """
    k = sim.shape[0]
    masked = sim.masked_fill(~large[None], float("-inf"))
    if params.strategy == "best_mask":
        best = masked.argmax(dim=1)  # first maximum on ties
        return [int(j) for j in best], [{} for _ in range(k)]
    if params.strategy == "one_to_one":
        from scipy.optimize import linear_sum_assignment

        cols = large.nonzero().flatten()
        rows, assigned = linear_sum_assignment(sim[:, cols].double().cpu().numpy(), maximize=True)
        chosen: list[int | None] = [None] * k
        for r, c in zip(rows.tolist(), assigned.tolist()):
            chosen[r] = int(cols[c])
        own = masked.argmax(dim=1)
        evidence = [{"own_best_mask": int(own[i]), "own_best_score": float(masked[i, own[i]])} for i in range(k)]
        return chosen, evidence
    if params.strategy == "dual_softmax":
        logits = masked / params.temperature
        over_masks = torch.softmax(logits, dim=1)  # [K,N]: noun i's distribution over masks
        over_nouns = torch.softmax(logits, dim=0).nan_to_num(0.0)  # [K,N]: mask j's distribution over nouns
        prob = over_masks * over_nouns
        best = prob.argmax(dim=1)
        evidence = [{"prob": float(prob[i, j]), "noun_over_masks": float(over_masks[i, j]),
                     "mask_over_nouns": float(over_nouns[i, j])} for i, j in enumerate(best.tolist())]
        return [int(j) for j in best], evidence
    raise ValueError(f"unknown matching strategy {params.strategy!r}; one of {STRATEGIES}")


def match_pairs(
    sim: torch.Tensor,
    nouns: Sequence[str],
    areas: torch.Tensor,
    *,
    params: MatchParams,
    image_area: int | None = None,
) -> tuple[list[Pair], Counter]:
    """Give every noun a mask by ``params.strategy`` and keep the pairs that clear the thresholds.

    Args:
        sim: ``[K,N]`` cosine similarities (K nouns, N masks).
        nouns: the K nouns.
        areas: ``[N]`` mask areas in pixels.
        params: strategy and thresholds.
        image_area: H·W of the source image, needed for ``min_area_frac``.

    Returns:
        ``(pairs, rejected)``: accepted pairs in noun order, and a Counter of rejection reasons
        (``no_large_mask``, ``no_mask_left``, ``low_prob``, ``low_score``, ``low_margin``).
    """
    k, n = sim.shape
    if k != len(nouns) or areas.shape != (n,):
        raise ValueError(f"sim {tuple(sim.shape)} does not fit {len(nouns)} nouns / areas {tuple(areas.shape)}")
    rejected: Counter = Counter()
    large = large_masks(areas.to(sim.device), params, image_area)  # [N]
    pairs: list[Pair] = []
    if k == 0:
        return pairs, rejected
    if n == 0 or not bool(large.any()):
        rejected["no_large_mask"] += k
        return pairs, rejected
    sim = sim.float()
    chosen, evidence = _choose(sim, large, params)
    n_large = int(large.sum())
    for i in range(k):
        j = chosen[i]
        if j is None:
            rejected["no_mask_left"] += 1
            continue
        score = float(sim[i, j])
        runner_noun = runner_score = margin = None
        if k > 1:
            column = sim[:, j].clone()
            column[i] = float("-inf")
            r = int(column.argmax())
            runner_noun, runner_score = nouns[r], float(column[r])
            margin = score - runner_score
        if params.strategy == "dual_softmax" and evidence[i]["prob"] < params.min_prob:
            rejected["low_prob"] += 1
            continue
        if score < params.min_score:
            rejected["low_score"] += 1
            continue
        if margin is not None and margin < params.min_margin:
            rejected["low_margin"] += 1
            continue
        pairs.append(Pair(i, nouns[i], j, score, runner_noun, runner_score, margin, int(areas[j]),
                          strategy=params.strategy, evidence=evidence[i], candidates=n_large))
    return pairs, rejected
