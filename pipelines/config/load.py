"""Typed YAML configs: dataclass schema + YAML file + ``key.sub=value`` overrides.

Configs live under ``conf/``. A job declares its schema as nested dataclasses; this module merges
the schema's defaults, the YAML file and the command-line overrides with OmegaConf (so unknown keys
and wrongly typed values are caught), converts the result back into the dataclasses, and finally
calls every ``validate()`` method found on the nested dataclasses. Any problem becomes a
:class:`ConfigError` whose message names the offending key, before any work starts.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def _validate_tree(obj: Any, prefix: str = "") -> None:
    """Call ``validate(prefix)`` on every nested dataclass, children first."""
    if not dataclasses.is_dataclass(obj):
        return
    for field in dataclasses.fields(obj):
        _validate_tree(getattr(obj, field.name), f"{prefix}{field.name}.")
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix)


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a ``schema`` instance from its defaults, a YAML file and CLI overrides.

    Args:
        schema: the top-level dataclass type.
        path: YAML file (may be ``None`` for pure defaults). A top-level ``defaults: [other.yaml]``
            list (paths relative to this file) is merged first, so presets can build on a base.
        overrides: ``["key.sub=value", ...]`` applied last.

    Raises:
        ConfigError: with the name of the bad key.
    """
    try:
        merged = OmegaConf.structured(schema)
        if path is not None:
            merged = OmegaConf.merge(merged, *_load_yaml_chain(Path(path)))
        for item in overrides:
            merged = OmegaConf.merge(merged, _parse_override(item))
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = str(err).splitlines()[0]
        raise ConfigError(f"config key '{key}': {msg}") from None
    except TypeError as err:  # e.g. an override that indexes into a list of structured configs
        raise ConfigError(f"config overrides {list(overrides)}: {err}") from None
    _validate_tree(obj)
    return obj  # type: ignore[return-value]


def _parse_override(item: str) -> Any:
    """One ``key.sub=value`` as an OmegaConf tree; a placeholder or a YAML syntax error names ``item``."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    if value.strip() == "..." or "..." in value.split("/") or (value.startswith("<") and value.endswith(">")):
        raise ConfigError(f"override {item}: {value!r} is a placeholder; put your own value for '{key}' there")
    try:
        return OmegaConf.from_dotlist([item])
    except OmegaConfBaseException:
        raise
    except Exception as err:  # yaml's ScannerError / ParserError: many lines naming no key
        reason = str(err).splitlines()[0]
        raise ConfigError(f"override {item}: the value of '{key}' is not valid YAML ({reason}); "
                          f"quote it: '{key}=\"{value}\"'") from None


def _load_yaml_chain(path: Path) -> list[Any]:
    """The YAML at ``path`` preceded by the files its ``defaults:`` list names (recursively)."""
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        conf = OmegaConf.load(path)
    except OmegaConfBaseException:
        raise
    except Exception as err:  # yaml's ScannerError / ParserError
        raise ConfigError(f"config file {path}: not valid YAML ({' '.join(str(err).split())[:200]})") from None
    chain: list[Any] = []
    bases = conf.pop("defaults", [])
    for base in bases or []:
        chain.extend(_load_yaml_chain((path.parent / str(base)).resolve()))
    chain.append(conf)
    return chain


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (for run reports and logs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def as_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain containers (JSON-serialisable)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
