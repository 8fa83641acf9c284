"""Pairs of a finished run, compared member by member (not as a set, which hides duplicates)."""
from __future__ import annotations

import hashlib
from collections import Counter

from pipelines.pairs.format import iter_committed


def pair_set(out_url: str, storage_options: dict | None = None) -> dict[str, str]:
    """``pair key → SHA-256 over its members`` of every committed shard under ``out_url``; a key
    seen twice fails (a unit redone on top of its committed copy would show here)."""
    pairs: dict[str, str] = {}
    for sample in iter_committed(out_url, Counter(), storage_options):
        digest = hashlib.sha256()
        for ext in sorted(k for k in sample if not k.startswith("__")):
            digest.update(ext.encode() + b"\0" + sample[ext])
        assert sample["__key__"] not in pairs, f"duplicate pair {sample['__key__']}"
        pairs[sample["__key__"]] = digest.hexdigest()
    return pairs
