"""Runs are quiet by default (issue 18): no warning a user cannot act on, nothing once per actor,
no library INFO lines without ``--log-level info``."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_a_smoke_mining_run_prints_only_its_banner_progress_and_summary(smoke_shards):
    """Before: every actor printed spaCy's fallback warning and open_clip's "initialized randomly";
    Ray printed its token-authentication notice. The banner now says once that the CLIP is random."""
    text = (smoke_shards.parent / "mine.log").read_text()
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    assert not [line for line in lines if "WARNING" in line or "INFO" in line or "warning" in line.lower()], text[-3000:]
    assert "(MiningActor" not in text and "(CpuStageActor" not in text, text[-3000:]  # nothing from the actors
    banner = [line for line in lines if line.startswith("mining ")]
    assert len(banner) == 1 and "CLIP ovseg-tiny-vit (random-initialised: scores are meaningless)" in banner[0]
