"""Corpus and output on two different fsspec file systems, each reachable only with its own options.

Two protocols (``corpusfs://``, ``outfs://``) are local folders whose root is a *storage option*: a
reader or writer handed the wrong options (or none) fails. Mining reads the corpus (captions, images,
instance annotations) through one and writes shards, sizes, report and contact sheet through the
other; the ground-truth check and the tuning job then read the output back through it.
"""
from __future__ import annotations

import json
import shutil

import fsspec
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from pipelines.config.load import load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.model_stage import UnitMiner
from pipelines.mine.report import ground_truth_check, write_report
from pipelines.pairs.writer import committed_units, write_sizes
from pipelines.mine.stats import RunResult
from pipelines.train.config import TuneConfig
from pipelines.train.dist import init_world
from pipelines.train.loop import run
from tests.conftest import REPO


class _RootedFS(DirFileSystem):
    """A local folder as a file system; the folder is the storage option ``root`` (required)."""

    cachable = False

    def __init__(self, root: str | None = None, **kwargs) -> None:
        if root is None:
            raise ValueError(f"{self.protocol}:// needs the storage option 'root'")
        super().__init__(path=root, fs=LocalFileSystem(), **kwargs)


class CorpusFS(_RootedFS):
    protocol = "corpusfs"


class OutFS(_RootedFS):
    protocol = "outfs"


@pytest.fixture()
def two_filesystems(tmp_path):
    fsspec.register_implementation("corpusfs", CorpusFS, clobber=True)
    fsspec.register_implementation("outfs", OutFS, clobber=True)
    corpus_root, out_root = tmp_path / "corpus_store", tmp_path / "out_store"
    shutil.copytree(REPO / "data" / "sample", corpus_root / "sample")
    out_root.mkdir()
    return {"root": str(corpus_root)}, {"root": str(out_root)}, out_root


def test_mine_from_one_filesystem_into_another_then_tune(two_filesystems, tmp_path):
    corpus_opts, out_opts, out_root = two_filesystems
    cfg = load_config(MineConfig, REPO / "conf/smoke/mine.yaml", [
        "corpus.url=corpusfs://sample/captions_sample.json", "output.url=outfs://pairs",
        "corpus.images_per_unit=5", "proposals.max_proposals=8"])
    cfg.corpus.storage_options, cfg.output.storage_options = corpus_opts, out_opts
    miner = UnitMiner(cfg)
    mined = [miner.mine_unit(unit) for unit in miner.reader.plan_units()]
    assert [m["output"] for m in mined] == ["outfs://pairs/pairs-000000.tar", "outfs://pairs/pairs-000001.tar"]
    assert sum(m["images"] for m in mined) == 10 and not any(m["skipped"] for m in mined)
    assert all(m["pairs"] > 0 for m in mined)

    with pytest.raises(ValueError, match="storage option 'root'"):
        committed_units(cfg.output.url)  # without its options the output is unreachable
    committed = committed_units(cfg.output.url, cfg.output.storage_options)
    assert sorted(committed) == [0, 1]
    write_sizes(cfg.output.url, committed, cfg.output.storage_options)
    report = write_report(cfg.output.url, RunResult(all_committed=committed, mined=mined, seconds=1.0), config={},
                          n_sheet=8, storage_options=cfg.output.storage_options)
    for name in ("pairs-000000.tar", "pairs-000001.stats.json", "sizes.json", "report.json", "report.md",
                 "score_hist.png", "contact_sheet.png"):
        assert (out_root / "pairs" / name).stat().st_size > 0, name
    assert report["totals"]["pairs"] == sum(json.loads((out_root / "pairs" / "sizes.json").read_text()).values())

    # ground truth lives on the corpus side, the pairs on the output side
    instances = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "unicorn"}]}
    (tmp_path / "corpus_store" / "sample" / "instances.json").write_text(json.dumps(instances))
    gt, judge = ground_truth_check(cfg.output.url, "corpusfs://sample/instances.json", None,
                                   storage_options=out_opts, corpus_storage_options=corpus_opts)
    assert gt["pairs"] == report["totals"]["pairs"] and gt["correct"] == 0

    tune = load_config(TuneConfig, REPO / "conf/smoke/tune_mpt.yaml", [
        "data.urls=outfs://pairs", f"run.out_dir={tmp_path / 'tune'}", "optim.max_steps=2",
        "data.holdout_percent=0", "eval.before=false", "run.tensorboard=false",
        "data.batch_size=4"])
    tune.data.sources[0].storage_options = out_opts
    summary = run(tune, init_world("cpu"))
    assert summary["step"] == 2 and summary["finished"]
