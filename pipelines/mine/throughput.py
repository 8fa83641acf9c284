"""Mining throughput over every run that mined the committed units, from their per-unit stats.

Each unit's stats carry ``started`` / ``finished`` (epoch seconds) and ``seconds``. The time spent
mining is the union of the units' intervals (actors overlap; gaps between runs do not count), so a
resumed run that had nothing left to do still reports the rate at which the shards were mined.
"""
from __future__ import annotations

from typing import Any, Iterable


def busy_seconds(stats: Iterable[dict[str, Any]]) -> float:
    """Length of the union of ``[started, finished]`` over units; units without stamps add ``seconds``."""
    intervals, loose = [], 0.0
    for s in stats:
        if s.get("started") is not None and s.get("finished") is not None:
            intervals.append((float(s["started"]), float(s["finished"])))
        else:
            loose += float(s.get("seconds", 0.0) or 0.0)
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total + loose


def accumulated_throughput(stats: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{units, images, pairs, busy_seconds, images_per_s, pairs_per_s}`` of all ``stats``.

    The rates are ``None`` when no unit recorded how long it took.
    """
    stats = list(stats)
    seconds = busy_seconds(stats)
    images = sum(int(s.get("images", 0)) for s in stats)
    pairs = sum(int(s.get("pairs", 0)) for s in stats)
    return {
        "units": len(stats), "images": images, "pairs": pairs, "busy_seconds": seconds,
        "images_per_s": images / seconds if seconds > 0 else None,
        "pairs_per_s": pairs / seconds if seconds > 0 else None,
    }
