"""The CPU stage in its own Ray workers gives exactly the shards of the CPU stage in a thread."""
from __future__ import annotations

from pathlib import Path

import pytest
import ray
import webdataset as wds

from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.driver import run_mining
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration


def _samples(out: Path) -> list[tuple[str, str, bytes, bytes, bytes]]:
    urls = sorted(str(p) for p in out.glob("pairs-*.tar"))
    return [(s["__key__"], s["txt"].decode(), s["jpg"], s["png"], s["json"])
            for s in wds.WebDataset(urls, shardshuffle=False)]


def test_cpu_workers_on_and_off_mine_the_same_pairs(tmp_path):
    def config(out: Path, workers: int) -> MineConfig:
        return load_config(MineConfig, str(REPO / "conf/smoke/mine.yaml"), [
            f"corpus.url={REPO / 'data/sample/captions_sample.json'}", f"output.url={out}",
            "ray.num_actors=1", f"ray.cpu_workers_per_actor={workers}", "run.images_per_batch=2",
            "run.prefetch_batches=2", "output.report=false"])

    ray.init(num_cpus=4, include_dashboard=False)
    try:
        split = run_mining(config(tmp_path / "split", 2))
        thread = run_mining(config(tmp_path / "thread", 0))
    finally:
        ray.shutdown()
    assert split.ok and thread.ok and not split.failed
    assert len(split.mined) == len(thread.mined) == 3
    pairs = _samples(tmp_path / "split")
    assert pairs and pairs == _samples(tmp_path / "thread")
    for stats in split.mined:  # the model stage reports how long it waited for the CPU workers
        assert "wait" in stats["timing"] and "proposals" in stats["timing"]
