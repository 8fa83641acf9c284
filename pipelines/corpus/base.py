"""Corpus readers: the shared protocol, config, registry and fsspec URL helpers.

A reader turns a corpus (COCO Captions json + images, img2dataset WebDataset tars, parquet) into
deterministic :class:`~pipelines.records.WorkUnit` s and, per unit, an iterator of
:class:`~pipelines.records.ImageRecord` s. Unusable items are skipped and counted in the
``collections.Counter`` passed to ``read_unit``; nothing is raised out of the iterator except
I/O errors that a retry may cure (network, permissions).

Shared skip reasons: ``missing_shard`` (an input file planned but absent when read) plus the
caption reasons of :func:`pipelines.records.clean_caption`.
"""

from __future__ import annotations

import importlib
import logging
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Protocol, runtime_checkable

import fsspec
from braceexpand import braceexpand
from fsspec.core import has_magic, url_to_fs

from pipelines.records import ImageRecord, WorkUnit

logger = logging.getLogger(__name__)

__all__ = [
    "CorpusConfig",
    "CorpusReader",
    "READERS",
    "register_reader",
    "build_reader",
    "load_builtin_readers",
    "expand_urls",
    "join_url",
    "parent_url",
]


@dataclass
class CorpusConfig:
    """Where a corpus lives and how to read it (one section of the mining YAML)."""

    format: str = "coco"  # 'coco' | 'webdataset' | 'parquet' (a key of READERS)
    url: str = ""  # fsspec URL: COCO captions json; tar(s) (brace/glob/dir); parquet file(s)/dir
    images_url: Optional[str] = None  # COCO image folder; None = the folder of the json
    images_per_unit: int = 256  # COCO / parquet: images (rows) per unit of work
    image_column: str = "image"  # parquet: encoded bytes, or a struct with a 'bytes' field
    image_path_column: Optional[str] = None  # parquet: path relative to the file's folder, or URL
    caption_column: str = "caption"  # parquet: str or list[str]
    key_column: Optional[str] = None  # parquet: sample key; rows sharing it are one image
    id_column: Optional[str] = None  # parquet: image id; groups rows when key_column is None
    url_column: Optional[str] = "url"  # parquet: original image URL (ignored when absent)
    max_caption_chars: int = 1000  # longer captions are cut at a word boundary
    storage_options: dict[str, Any] = field(default_factory=dict)  # passed to fsspec


@runtime_checkable
class CorpusReader(Protocol):
    """What every corpus reader provides (see docs/CONTRACTS.md)."""

    cfg: CorpusConfig

    def plan_units(self) -> list[WorkUnit]:
        """All units of the corpus, deterministic, ``index`` numbered 0..n-1."""
        ...

    def read_unit(self, unit: WorkUnit, skips: Counter) -> Iterator[ImageRecord]:
        """Records of one unit; unusable items are counted in ``skips`` and left out."""
        ...


READERS: dict[str, type] = {}
_BUILTIN_MODULES = (
    "pipelines.corpus.coco",
    "pipelines.corpus.webdataset",
    "pipelines.corpus.parquet",
)


def register_reader(name: str):
    """Class decorator: ``@register_reader("coco")`` adds the class to :data:`READERS`."""

    def wrap(cls: type) -> type:
        READERS[name] = cls
        return cls

    return wrap


def load_builtin_readers() -> dict[str, type]:
    """Import the built-in reader modules (which registers them); returns :data:`READERS`."""
    for module in _BUILTIN_MODULES:  # cheap after the first time
        importlib.import_module(module)
    return READERS


def build_reader(cfg: CorpusConfig) -> CorpusReader:
    """Instantiate the reader registered under ``cfg.format``."""
    load_builtin_readers()
    try:
        cls = READERS[cfg.format]
    except KeyError:
        raise ValueError(
            f"unknown corpus format {cfg.format!r}; known: {sorted(READERS)}"
        ) from None
    return cls(cfg)


# ---------------------------------------------------------------- fsspec URL helpers


def _has_protocol(url: str) -> bool:
    return "://" in url


def _to_url(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Give ``path`` back a protocol unless ``like`` was a plain local path."""
    if not _has_protocol(like) and "file" in _protocols(fs):
        return path
    return fs.unstrip_protocol(path)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def expand_urls(
    url: str, suffixes: tuple[str, ...], storage_options: Optional[dict] = None
) -> list[str]:
    """Expand a corpus URL into a sorted list of file URLs.

    ``url`` may be a brace pattern (``shard-{00000..00009}.tar``, each part may hold a glob), a glob
    (``data/*.parquet``), a directory (searched recursively for names ending in ``suffixes``) or
    one file. Brace-expanded names are kept even when missing (the reader counts
    ``missing_shard``); globs and directories only give what exists. Duplicates are dropped.
    """
    urls: set[str] = set()
    for part in braceexpand(url):
        fs, path = url_to_fs(part, **(storage_options or {}))
        if has_magic(path):
            urls.update(_to_url(fs, p, part) for p in fs.glob(path) if not fs.isdir(p))
        elif fs.isdir(path):
            found = [p for p in fs.find(path) if p.lower().endswith(suffixes)]
            if not found:
                logger.warning("no %s files under %s", "/".join(suffixes), part)
            urls.update(_to_url(fs, p, part) for p in found)
        else:
            urls.add(part)
    return sorted(urls)


def parent_url(url: str) -> str:
    """The folder of a file URL (``s3://b/x/y.json`` -> ``s3://b/x``)."""
    head, sep, path = url.rpartition("://")
    return f"{head}{sep}{posixpath.dirname(path)}" if sep else posixpath.dirname(url) or "."


def join_url(base: str, rel: str) -> str:
    """Join a relative path onto a folder URL; absolute paths and full URLs are returned as is."""
    if _has_protocol(rel) or rel.startswith("/"):
        return rel
    while rel.startswith("./"):
        rel = rel[2:]
    return f"{base.rstrip('/')}/{rel}"
