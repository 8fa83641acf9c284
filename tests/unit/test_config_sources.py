"""Configuration has one source of truth: defaults in the dataclasses, presets hold differences only,
shared sections are one definition, configs are keyword-only, and --help lists every key."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipelines.config.sections import ClipSection, RunBase
from pipelines.config.load import _load_yaml_chain, load_config
from pipelines.config.help import describe, field_comments
from pipelines.mine.config import MineConfig
from pipelines.train.config import EvalCropsConfig, TuneConfig
from pipelines.train.maskformer_config import TrainMaskFormerConfig
from tests.conftest import REPO

SCHEMAS = {"mine": MineConfig, "tune_mpt": TuneConfig, "train_maskformer": TrainMaskFormerConfig}
PRESETS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "conf").rglob("*.yaml"))


def _schema_of(preset: str) -> type:
    """The job's schema: ``conf/<group>/<job>.yaml`` or a variant ``<job>_<what>.yaml`` (``mine_urls.yaml``)."""
    stem = preset.rsplit("/", 1)[1].removesuffix(".yaml")
    return SCHEMAS[max((k for k in SCHEMAS if stem == k or stem.startswith(k + "_")), key=len)]


def _leaves(node, prefix: str = "") -> list[str]:
    """Dotted keys of the scalar / list values of a YAML mapping."""
    out = []
    for key, value in node.items():
        if OmegaConf.is_dict(value) and len(value):
            out.extend(_leaves(value, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key}")
    return out


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_sets_only_what_differs_from_what_it_builds_on(preset):
    """Each key of a preset changes the value it would have without the preset (the dataclass
    default, or the base preset named in ``defaults:``): no default is stated twice."""
    schema = _schema_of(preset)
    *bases, own = _load_yaml_chain(REPO / preset)
    before = OmegaConf.merge(OmegaConf.structured(schema), *bases)
    after = OmegaConf.merge(before, own)
    same = [key for key in _leaves(own) if OmegaConf.select(before, key) == OmegaConf.select(after, key)]
    for key in _leaves(own):  # lists of sections: an element restates no default of its own type
        value = OmegaConf.select(after, key)
        for i, element in enumerate(value if OmegaConf.is_list(value) else []):
            if OmegaConf.is_dict(element) and OmegaConf.get_type(element) is not dict:
                default = OmegaConf.structured(OmegaConf.get_type(element))
                own_element = OmegaConf.select(own, key)[i]
                same += [f"{key}[{i}].{k}" for k in own_element if own_element[k] == default.get(k)]
    assert same == [], f"{preset} restates values it already has: {same}"
    load_config(schema, REPO / preset)  # and it loads


def test_shared_sections_are_one_definition():
    mine, tune = MineConfig(), TuneConfig()
    assert isinstance(mine.clip, ClipSection) and type(tune.clip) is ClipSection
    assert type(EvalCropsConfig().clip) is ClipSection
    assert isinstance(mine.run, RunBase) and isinstance(tune.run, RunBase)
    shared = {f.name for f in dataclasses.fields(ClipSection)}
    assert shared >= {"model", "pretrained", "checkpoint"}
    for cls in (type(mine.clip), type(mine.run), type(tune.run)):
        for f in dataclasses.fields(cls.__mro__[1]):  # inherited, not redeclared
            assert f.name not in cls.__dict__.get("__annotations__", {}), f"{cls.__name__}.{f.name}"


def _config_classes() -> set[type]:
    seen: set[type] = set()

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for value in (getattr(cls(), f.name) for f in dataclasses.fields(cls)):
            if dataclasses.is_dataclass(value):
                walk(type(value))
        import typing
        for hint in typing.get_type_hints(cls).values():
            for arg in typing.get_args(hint):
                if dataclasses.is_dataclass(arg):
                    walk(arg)

    for schema in (MineConfig, TuneConfig, EvalCropsConfig, TrainMaskFormerConfig):
        walk(schema)
    return seen


@pytest.mark.parametrize("cls", sorted(_config_classes(), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_config_dataclasses_are_keyword_only_and_commented(cls):
    assert all(f.kw_only for f in dataclasses.fields(cls)), cls.__name__
    with pytest.raises(TypeError):
        cls("positional")
    missing = [name for name, comment in field_comments(cls).items() if not comment]
    assert missing == [], f"{cls.__name__}: fields without a one-line comment: {missing}"


def test_match_params_are_keyword_only():
    from ovseg.matching import MatchParams

    with pytest.raises(TypeError):
        MatchParams(0.2, 256, 0.001, 0.0)
    assert MatchParams(min_score=0.2).min_score == 0.2


@pytest.mark.parametrize("job, schema", [("mine", MineConfig), ("tune_mpt", TuneConfig),
                                         ("train_maskformer", TrainMaskFormerConfig)])
def test_help_lists_every_key_with_default_and_comment(job, schema):
    out = subprocess.run([sys.executable, f"jobs/{job}.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    lines = {line.split(" = ", 1)[0].strip(): line for line in out.splitlines() if " = " in line}
    keys = describe(schema)
    assert len(keys) > 30
    for k in keys:
        assert k.key in lines, f"--help of jobs/{job}.py lacks {k.key}"
        assert k.comment and lines[k.key].rstrip().endswith(k.comment), k.key
