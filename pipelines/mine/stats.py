"""Per-unit counters of the mining job, their aggregation, and what a whole run did."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

#: Score histogram bin edges (cosine similarity), shared by every unit so histograms add up.
SCORE_BINS: list[float] = [round(-1.0 + 0.05 * i, 2) for i in range(41)]


def _bin(score: float) -> int:
    return min(max(int((score + 1.0) / 0.05), 0), len(SCORE_BINS) - 2)


@dataclass
class UnitStats:
    """What happened to one unit: counts of inputs, outputs, skips (by reason) and rejections."""

    unit: int
    source: str = ""
    images: int = 0
    captions: int = 0
    nouns: int = 0
    proposals: int = 0
    pairs: int = 0
    crops: int = 0  # masked crops scored by CLIP (proposals left after filtering)
    skipped: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    noun_counts: Counter = field(default_factory=Counter)
    score_hist: list[int] = field(default_factory=lambda: [0] * (len(SCORE_BINS) - 1))

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def add_pair(self, noun: str, score: float) -> None:
        self.pairs += 1
        self.noun_counts[noun] += 1
        self.score_hist[_bin(score)] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit, "source": self.source, "images": self.images, "captions": self.captions,
            "nouns": self.nouns, "proposals": self.proposals, "crops": self.crops, "pairs": self.pairs,
            "skipped": dict(sorted(self.skipped.items())), "rejected": dict(sorted(self.rejected.items())),
            "noun_counts": dict(self.noun_counts.most_common()), "score_hist": self.score_hist,
            "score_bins": SCORE_BINS,
        }


def aggregate(stats: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum unit stats dicts into run totals (counts, skips, rejections, nouns, histogram)."""
    total: dict[str, Any] = {k: 0 for k in ("units", "images", "captions", "nouns", "proposals", "pairs")}
    skipped, rejected, nouns = Counter(), Counter(), Counter()
    hist = [0] * (len(SCORE_BINS) - 1)
    for s in stats:
        total["units"] += 1
        for key in ("images", "captions", "nouns", "proposals", "pairs"):
            total[key] += int(s.get(key, 0))
        skipped.update(s.get("skipped", {}))
        rejected.update(s.get("rejected", {}))
        nouns.update(s.get("noun_counts", {}))
        hist = [a + b for a, b in zip(hist, s.get("score_hist", hist))]
    total.update(skipped=dict(skipped.most_common()), rejected=dict(rejected.most_common()),
                 unique_nouns=len(nouns), top_nouns=nouns.most_common(25), score_hist=hist,
                 score_bins=SCORE_BINS)
    return total


@dataclass(kw_only=True)
class RunResult:
    """What a mining run did."""

    planned: int = 0
    skipped_committed: int = 0
    mined: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    all_committed: dict[int, dict] = field(default_factory=dict)
    seconds: float = 0.0  # wall clock of the whole run (Ray start, model loading, mining)
    mining_seconds: float = 0.0  # from models ready to the last unit done
    sizes: dict[str, int] = field(default_factory=dict)
    mismatched: dict[int, str] = field(default_factory=dict)  # reported committed, not found committed

    @property
    def ok(self) -> bool:
        """Nothing failed and every unit an actor reported committed is committed where we read."""
        return not self.failed and not self.mismatched
