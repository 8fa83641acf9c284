"""Pair quality tables shared by the world benches: every figure beside its chance baseline.

A library module for ``bench/world.py``, ``bench/world_proposals.py`` and ``bench/world_matching.py``
(scripts share this module, never each other). The numbers come from
:mod:`pipelines.pairs.quality`: ``mining_quality`` judges the pairs in the shards,
``chance_precision`` gives a random choice among the same candidate masks, and
``strategy_quality`` replays matching strategies and thresholds on the similarities the shards'
candidates files hold.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ovseg.matching import STRATEGIES, MatchParams
from pipelines.pairs.quality import GroundTruth, chance_precision, mining_quality, strategy_quality

ROOT = Path(__file__).resolve().parents[1]
#: min_score / min_margin grid of the precision–recall curve (world CLIP similarities)
SCORE_GRID = (-1.0, 0.15, 0.2, 0.25, 0.3, 0.35)
MARGIN_GRID = (-2.0, 0.0, 0.01, 0.02, 0.03, 0.05, 0.08)


#: the world benches mine with every threshold off (every noun gets a mask), so that one set of shards
#: holds the whole precision–recall curve; the preset's own thresholds are one point on it
THRESHOLDS_OFF = ("matching.min_score=-1.0", "matching.min_margin=-2.0")


def world_matching() -> MatchParams:
    """The ``matching`` section of conf/world/mine.yaml with :data:`THRESHOLDS_OFF` (what the benches mine with)."""
    from pipelines.config.load import load_config
    from pipelines.mine.config import MineConfig

    return load_config(MineConfig, ROOT / "conf/world/mine.yaml", list(THRESHOLDS_OFF)).matching


def quality_with_chance(folder: Path, gt: GroundTruth, *, image_ids: set[int] | None = None,
                        min_margin: float | None = None) -> dict:
    """``mining_quality`` of ``folder`` with ``"chance"`` (``chance_precision`` of the same pairs) added."""
    q = mining_quality(folder, gt, image_ids=image_ids, min_margin=min_margin)
    q["chance"] = chance_precision(folder, gt, min_margin=min_margin)
    return q


def strategy_rows(folder: Path, gt: GroundTruth, base: MatchParams, *, image_ids: set[int] | None = None) -> dict:
    """``strategy → strategy_quality row`` for every strategy with ``base``'s thresholds."""
    params = [dataclasses.replace(base, strategy=s) for s in STRATEGIES]
    return dict(zip(STRATEGIES, strategy_quality(folder, gt, params, image_ids=image_ids)))


def pr_curve(folder: Path, gt: GroundTruth, base: MatchParams, *, image_ids: set[int] | None = None,
             strategies: tuple[str, ...] = STRATEGIES) -> list[dict]:
    """Precision / recall (objects, backgrounds, all) over ``SCORE_GRID`` × ``MARGIN_GRID`` per strategy,
    read off one set of shards."""
    params = [dataclasses.replace(base, strategy=s, min_score=sc, min_margin=mg)
              for s in strategies for sc in SCORE_GRID for mg in MARGIN_GRID]
    return strategy_quality(folder, gt, params, image_ids=image_ids)


def _f(x: float) -> str:
    return "  n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def mining_table(mining: dict) -> str:
    """Rows of ``quality_with_chance`` results: precision beside chance, overall and per kind."""
    lines = [f"{'pairs mined by':<34}{'pairs':>7}{'precision':>10}{'chance':>8}{'recall':>8}"
             f"{'objects':>9}{'chance':>8}{'backgr.':>9}{'chance':>8}"]
    for name, q in mining.items():
        k, c = q["precision_by_kind"], q.get("chance", {})
        ck = c.get("precision_by_kind", {})
        lines.append(f"{name:<34}{q['pairs']:>7}{_f(q['precision']):>10}{_f(c.get('precision')):>8}"
                     f"{_f(q['recall']):>8}{_f(k['thing']['precision']):>9}"
                     f"{_f(ck.get('thing', {}).get('precision')):>8}{_f(k['stuff']['precision']):>9}"
                     f"{_f(ck.get('stuff', {}).get('precision')):>8}")
    return "\n".join(lines)


def strategy_table(rows: dict[str, dict[str, dict]]) -> str:
    """``{shards name: {strategy: row}}`` as one table: precision (chance) and recall per kind."""
    lines = [f"{'proposals / strategy':<34}{'pairs':>7}{'obj. P':>8}{'chance':>8}{'obj. R':>8}"
             f"{'bg. P':>8}{'chance':>8}{'bg. R':>8}{'all P':>8}{'all R':>8}"]
    for name, by_strategy in rows.items():
        for strategy, r in by_strategy.items():
            t, s = r["by_kind"]["thing"], r["by_kind"]["stuff"]
            lines.append(f"{name + ' / ' + strategy:<34}{r['pairs']:>7}{_f(t['precision']):>8}{_f(t['chance']):>8}"
                         f"{_f(t['recall']):>8}{_f(s['precision']):>8}{_f(s['chance']):>8}{_f(s['recall']):>8}"
                         f"{_f(r['precision']):>8}{_f(r['recall']):>8}")
    return "\n".join(lines)


def pr_table(curve: list[dict], *, kind: str = "thing") -> str:
    """The PR curve rows of one kind: strategy, min_score, min_margin, pairs, precision (chance), recall."""
    lines = [f"{'strategy':<14}{'min_score':>10}{'min_margin':>11}{'pairs':>7}{'P':>7}{'chance':>8}{'R':>7}"]
    for r in curve:
        p, k = r["params"], r["by_kind"][kind]
        lines.append(f"{p['strategy']:<14}{p['min_score']:>10.2f}{p['min_margin']:>11.2f}{k['pairs']:>7}"
                     f"{_f(k['precision']):>7}{_f(k['chance']):>8}{_f(k['recall']):>7}")
    return "\n".join(lines)


def best_point(curve: list[dict], *, kind: str = "thing", min_recall: float = 0.0) -> dict | None:
    """The curve point with the highest ``kind`` precision whose ``kind`` recall is at least ``min_recall``."""
    ok = [r for r in curve if r["by_kind"][kind]["pairs"] and r["by_kind"][kind]["recall"] >= min_recall]
    return max(ok, key=lambda r: (r["by_kind"][kind]["precision"], r["by_kind"][kind]["recall"]), default=None)
