"""Selecting pairs by an expression over the shard indexes: exactly pandas' rows, new committed shards,
and a tuning stream that sees only the kept pairs."""

from __future__ import annotations

import collections

import pytest

from pipelines.config.load import ConfigError, load_config
from pipelines.mine.config import MineConfig
from pipelines.mine.model_stage import UnitMiner
from pipelines.pairs.format import (PairMeta, committed_indices, index_row, iter_tar, list_names, read_folder_index,
                                    read_index, shard_url, verify_shard)
from pipelines.pairs.select import FilterError, compile_filter, main, select_folder, selected_keys
from pipelines.pairs.stream import PairStream, make_source
from pipelines.world.generate import generate_split

EXPRESSIONS = [
    "score > 0.0 and margin > 0.01",
    "not (margin > 0.01)",  # a null margin fails the comparison, so `not` keeps it (as pandas does)
    "noun in ('circle', 'square', 'sky') or area >= 2000",
    "noun not in ['sky'] & (score - margin < 0.05)",
    "0 < candidates <= 12 and backend == 'superpixel' and strategy != 'x'",
    "unit == 1 and ~(score > -1)",
]


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    """A world folder of two committed units mined with the real miner (tiny random CLIP)."""
    root = tmp_path_factory.mktemp("sel")
    generate_split(root / "w", seed=3, split="train", n=10, formats=("coco",))
    ann = root / "w/coco/annotations"
    cfg = load_config(MineConfig, "conf/smoke/mine.yaml", [
        f"corpus.url={ann / 'captions_train.json'}", f"corpus.images_url={root / 'w/coco/train'}",
        "corpus.images_per_unit=5", f"output.url={root / 'pairs'}", "proposals.max_proposals=12"])
    miner = UnitMiner(cfg)
    for unit in miner.reader.plan_units():
        miner.mine_unit(unit)
    return root / "pairs"


def test_the_index_is_the_tars_json(mined):
    units = committed_indices(list_names(str(mined)))
    assert units == [0, 1]
    for unit in units:
        samples = list(iter_tar(shard_url(str(mined), unit), collections.Counter()))
        assert read_index(str(mined), unit).to_pylist() == [index_row(s["__key__"], PairMeta.from_json(s["json"]))
                                                             for s in samples]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_selector_keeps_exactly_the_rows_pandas_selects(mined, expression):
    df = read_folder_index(str(mined)).to_pandas()
    assert df["margin"].isna().sum() < len(df)
    expected = df.query(expression)["key"].tolist()
    assert selected_keys(str(mined), expression) == expected


@pytest.mark.parametrize("bad", ["__import__('os').system('true')", "score.real > 0", "colour == 'red'",
                                 "[k for k in key]", "lambda: 1", "score >", "box == 1", "score"])
def test_anything_outside_the_grammar_is_refused(bad):
    with pytest.raises(FilterError):
        compile_filter(bad)


def test_select_writes_committed_shards_and_a_key_list(mined, tmp_path, capsys):
    df = read_folder_index(str(mined)).to_pandas()
    expression = f"score > {df['score'].median():.6f} and not (margin < 0)"  # random CLIP: a data-given threshold
    keys = selected_keys(str(mined), expression)
    assert 0 < len(keys) < len(read_folder_index(str(mined)))
    assert main([str(mined), expression, "--out", str(tmp_path / "kept")]) == 0
    out = str(tmp_path / "kept")
    got = [s["__key__"] for u in committed_indices(list_names(out)) for s in iter_tar(shard_url(out, u),
                                                                                       collections.Counter())]
    assert got == keys
    assert all(verify_shard(out, u) is None for u in committed_indices(list_names(out)))
    assert read_folder_index(out).column("key").to_pylist() == keys  # the new shards carry their own index
    assert main([str(mined), expression, "--keys", str(tmp_path / "keys.txt")]) == 0
    assert (tmp_path / "keys.txt").read_text().split() == keys
    assert main([str(mined), "score >>> 1", "--keys", "-"]) == 2
    assert "error:" in capsys.readouterr().err


def test_tuning_with_data_filter_sees_only_those_pairs(mined):
    from pipelines.train.config import TuneConfig

    expression = "noun in ('circle', 'square', 'sky') or area >= 2000"
    keys = selected_keys(str(mined), expression)
    cfg = load_config(TuneConfig, "conf/smoke/tune_mpt.yaml", [f"data.urls={mined}", f"data.filter={expression}"])
    source = make_source(cfg.data.sources[0].urls, filter=cfg.data.filter)
    assert source.num_samples == len(keys)
    stream = PairStream([source], batch_size=4, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, infinite=False)
    seen = [k for batch in stream for k in batch["keys"]]
    assert sorted(seen) == sorted(keys)
    with pytest.raises(ConfigError, match="data.filter"):
        load_config(TuneConfig, "conf/smoke/tune_mpt.yaml", [f"data.urls={mined}", "data.filter=open('x')"])
