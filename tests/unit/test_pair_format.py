"""The pair-shard format has one owner: pipelines/pairs/format.py, and docs/CONTRACTS.md matches it."""
from __future__ import annotations

import ast
import collections
import dataclasses
import json
import re
from pathlib import Path

import pytest

from pipelines.pairs.format import PairMeta, iter_tar, pair_key, pair_sample, shard_urls
from pipelines.records import SkipSample
from tests.synthetic_pairs import write_synthetic_pairs
from tests.conftest import REPO

PACKAGES = ("ovseg", "pipelines", "jobs")
# modules that write or read pair shards: they must take names and metadata from pair_format
USERS = ("pipelines/pairs/writer.py", "pipelines/mine/model_stage.py", "tests/synthetic_pairs.py", "pipelines/pairs/stream.py",
         "pipelines/mine/report.py", "pipelines/pairs/quality.py")
FORMAT_LITERAL = re.compile(r"pairs-[{%*]|\.stats\.json|^sizes\.json$")


def _contract_fields() -> dict[str, str]:
    """``field → type`` from the json table of the pair-shard section of docs/CONTRACTS.md."""
    text = (REPO / "docs/CONTRACTS.md").read_text()
    section = text.split("## Pair shards", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| field")]
    fields = {}
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        fields[cells[0]] = cells[1]
    return fields


def test_contract_table_lists_exactly_the_dataclass_fields():
    in_code = [f.name for f in dataclasses.fields(PairMeta)]
    in_doc = list(_contract_fields())
    assert in_doc == in_code, (f"only in code: {sorted(set(in_code) - set(in_doc))}, "
                               f"only in docs/CONTRACTS.md: {sorted(set(in_doc) - set(in_code))}")


def test_optional_fields_are_nullable_in_the_contract():
    doc = _contract_fields()
    for f in dataclasses.fields(PairMeta):
        nullable = "None" in str(f.type) or "Optional" in str(f.type)
        assert ("null" in doc[f.name]) == nullable, f.name


def _meta(**kw) -> PairMeta:
    values = dict(noun="cat", score=0.3, runner_up_noun=None, runner_up_score=None, margin=None, caption="a cat",
                  image_key="k", image_id=7, source_url=None, box=[0, 0, 4, 4], area=9, image_size=[8, 8],
                  proposal_backend="gt", proposal_index=0, proposal_score=1.0, unit=3, clip_model="c")
    values.update(kw)
    return PairMeta(**values)


def test_meta_round_trip_and_keyword_only():
    meta = _meta()
    assert PairMeta.from_json(meta.to_json()) == meta
    with pytest.raises(TypeError):
        PairMeta("cat", 0.3)  # noqa: the record is keyword-only
    with pytest.raises(SkipSample) as info:
        PairMeta.from_json(b'{"noun": "cat"}')
    assert info.value.reason == "corrupt_meta"
    sample = pair_sample(key=pair_key(3, "k", 1), jpg=b"j", png=b"p", meta=meta)
    assert list(sample) == ["__key__", "jpg", "png", "txt", "json"] and sample["__key__"] == "u000003_k_001"


def test_every_reader_skips_uncommitted_shards_glob_included(tmp_path):
    write_synthetic_pairs(str(tmp_path), n_shards=3, per_shard=2, size=16)
    (tmp_path / "pairs-000001.stats.json").unlink()  # a half-written unit
    names = lambda urls: [u.rsplit("/", 1)[1] for u in urls]  # noqa: E731
    expected = ["pairs-000000.tar", "pairs-000002.tar"]
    assert names(shard_urls(str(tmp_path))) == expected
    assert names(shard_urls(f"{tmp_path}/pairs-*.tar")) == expected
    assert names(shard_urls(f"{tmp_path}/pairs-{{000000..000002}}.tar")) == expected
    with pytest.raises(FileNotFoundError):
        shard_urls(f"{tmp_path}/pairs-000001.tar")


def test_reader_takes_storage_options(tmp_path):
    write_synthetic_pairs(str(tmp_path), n_shards=1, per_shard=2, size=16)
    [url] = shard_urls(f"file://{tmp_path}", {"auto_mkdir": False})
    samples = list(iter_tar(url, collections.Counter(), {"auto_mkdir": False}))
    assert [PairMeta.from_json(s["json"]).unit for s in samples] == [0, 0]


def _python_files():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def test_one_skip_sample_and_one_expand_urls():
    defined = collections.defaultdict(list)
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in ("SkipSample", "expand_urls"):
                defined[node.name].append(str(path.relative_to(REPO)))
    assert defined == {"SkipSample": ["pipelines/records.py"], "expand_urls": ["pipelines/storage/urls.py"]}


def _literals(path: Path) -> list[str]:
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("module", USERS)
def test_users_take_names_from_the_format_module(module):
    path = REPO / module
    assert [s for s in _literals(path) if FORMAT_LITERAL.search(s)] == []
    assert "pipelines.pairs.format" in path.read_text()


def test_rle_round_trip_equals_the_source_mask():
    import numpy as np

    from pipelines.pairs.format import mask_to_rle, rle_to_mask

    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 13), (64, 48)]:
        mask = rng.random(shape) > 0.5
        rle = mask_to_rle(mask)
        assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
        back = rle_to_mask(json.loads(json.dumps(rle)))  # survives the pair's json
        assert back.dtype == bool and np.array_equal(back, mask)
    assert not rle_to_mask(mask_to_rle(np.zeros((5, 5), bool))).any()


def test_index_without_a_marker_entry_is_refused(tmp_path):
    from pipelines.pairs.format import IndexMismatch, read_index

    write_synthetic_pairs(str(tmp_path), n_shards=1, per_shard=2, size=16)
    (tmp_path / "pairs-000000.parquet").write_bytes(b"PAR1")
    with pytest.raises(IndexMismatch, match="records no index"):
        read_index(str(tmp_path), 0)
    with pytest.raises(IndexMismatch, match="no readable commit marker"):
        read_index(str(tmp_path), 5)
