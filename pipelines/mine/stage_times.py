"""Seconds spent per stage of the mining loop, accumulated per unit.

``with times("clip"): ...`` adds the block's wall time to the ``clip`` entry. The CPU side
(read, decode, nouns, proposals) and the model side (wait, crops, clip, text, matching, writing)
keep one :class:`StageTimes` each, so no two threads write one object; :meth:`merge` adds them up.
``wait`` is the time the model stage sat idle waiting for the next prepared batch.
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Iterator


class StageTimes:
    """Accumulated wall seconds per stage name."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def merge(self, other: "StageTimes | dict[str, float]") -> None:
        self.seconds.update(other.seconds if isinstance(other, StageTimes) else other)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in sorted(self.seconds.items())}
