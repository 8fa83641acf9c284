"""Pairs of a finished run, compared member by member (not as a set, which hides duplicates)."""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pipelines.pairs.format import iter_committed

FLOAT_TOL = 1e-6  # CLIP scores computed with other thread counts (an in-process miner vs Ray actors) differ by ~6e-8


def _close(a: Any, b: Any) -> bool:
    """Equal JSON values, floats within :data:`FLOAT_TOL`."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=0, abs_tol=FLOAT_TOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


@dataclass(frozen=True, eq=False)
class PairDigest:
    """One pair: SHA-256 over its binary and text members, and its json metadata (compared with
    float tolerance: every other member must be identical byte for byte)."""

    members: str
    meta: dict

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PairDigest) and self.members == other.members and _close(self.meta, other.meta)

    __hash__ = None  # type: ignore[assignment]


def pair_set(out_url: str, storage_options: dict | None = None) -> dict[str, PairDigest]:
    """``pair key → PairDigest`` of every committed shard under ``out_url``; a key seen twice fails
    (a unit redone on top of its committed copy would show here)."""
    pairs: dict[str, PairDigest] = {}
    for sample in iter_committed(out_url, Counter(), storage_options):
        digest = hashlib.sha256()
        for ext in sorted(k for k in sample if not k.startswith("__") and k != "json"):
            digest.update(ext.encode() + b"\0" + sample[ext])
        assert sample["__key__"] not in pairs, f"duplicate pair {sample['__key__']}"
        pairs[sample["__key__"]] = PairDigest(members=digest.hexdigest(), meta=json.loads(sample["json"]))
    return pairs
