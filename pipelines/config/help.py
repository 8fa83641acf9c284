"""Every key of a config dataclass tree with its default and its one-line comment (``--help``).

The one-line comment of a field is the ``#`` comment at the end of its line in the dataclass source
(the nanoGPT habit): that comment is the single owner of the key's description, read here with
:mod:`ast` and :mod:`tokenize` so the listing can never drift from the code.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any

__all__ = ["KeyHelp", "field_comments", "describe", "help_text"]


@dataclass(frozen=True, kw_only=True)
class KeyHelp:
    """One config key for the ``--help`` listing."""

    key: str  # dotted key, e.g. clip.model; list elements as data.sources[].urls
    default: Any  # default value (plain containers)
    comment: str  # the field's one-line comment ("" when it has none)


@functools.cache
def _own_comments(cls: type) -> dict[str, str]:
    """``field → trailing comment`` for the fields declared in ``cls``'s own body."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments.setdefault(tok.start[0], tok.string.lstrip("#").strip())
    out: dict[str, str] = {}
    body = ast.parse(source).body[0]
    for node in getattr(body, "body", []):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            out[node.target.id] = next((comments[i] for i in lines if i in comments), "")
    return out


def field_comments(cls: type) -> dict[str, str]:
    """``field → one-line comment`` of a dataclass, inherited fields included."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass) and klass is not object:
            out.update(_own_comments(klass))
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _element_type(hint: Any) -> type | None:
    """The dataclass of ``list[SomeDataclass]``, else None."""
    if typing.get_origin(hint) is list:
        (arg,) = typing.get_args(hint) or (None,)
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def describe(schema: type, prefix: str = "") -> list[KeyHelp]:
    """Every key of the dataclass tree of ``schema`` (defaults from ``schema()``), depth first."""
    instance = schema()
    hints = typing.get_type_hints(schema)
    comments = field_comments(schema)
    out: list[KeyHelp] = []
    for f in dataclasses.fields(schema):
        key, value = prefix + f.name, getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(describe(type(value), key + "."))
            continue
        out.append(KeyHelp(key=key, default=_plain(value), comment=comments.get(f.name, "")))
        element = _element_type(hints[f.name])
        if element is not None:
            out.extend(describe(element, key + "[]."))
    return out


def help_text(schema: type) -> str:
    """The listing for ``argparse``'s epilog: ``key = default  # comment`` per line."""
    keys = describe(schema)
    left = [f"{k.key} = {json.dumps(k.default)}" for k in keys]
    width = max(map(len, left))
    lines = ["config keys (override as key.sub=value; default, then meaning):"]
    lines += [f"  {text:<{width}}  # {k.comment}" for text, k in zip(left, keys)]
    return "\n".join(lines)
