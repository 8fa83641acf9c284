"""Corpus readers: the shared protocol, config and registry (URL helpers: :mod:`pipelines.storage.urls`).

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
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Iterator, Optional, Protocol, runtime_checkable

import fsspec

from pipelines.records import ImageRecord, WorkUnit

logger = logging.getLogger(__name__)

__all__ = [
    "CorpusConfig",
    "CorpusReader",
    "READERS",
    "register_reader",
    "build_reader",
    "load_builtin_readers",
]


@dataclass(kw_only=True)
class CorpusConfig:
    """Where a corpus lives and how to read it (one section of the mining YAML)."""

    format: str = "coco"  # 'coco' | 'webdataset' | 'parquet' | 'urls' (a key of READERS)
    url: str = ""  # fsspec URL: COCO captions json; tar(s) (brace/glob/dir); parquet file(s)/dir; urls: parquet/csv/tsv/jsonl list(s)
    images_url: Optional[str] = None  # COCO image folder; None = the folder of the json
    images_per_unit: int = 256  # COCO / parquet: images (rows) per unit of work
    image_column: str = "image"  # parquet: encoded bytes, or a struct with a 'bytes' field
    image_path_column: Optional[str] = None  # parquet: path relative to the file's folder, or URL
    caption_column: str = "caption"  # parquet / urls: str or list[str]
    key_column: Optional[str] = None  # parquet: sample key; rows sharing it are one image; urls: the key (else <file>_<row>)
    id_column: Optional[str] = None  # parquet: image id; groups rows when key_column is None; urls: the image id
    url_column: Optional[str] = "url"  # parquet: original image URL (ignored when absent); urls: the URL to download
    extra_columns: list[str] = field(default_factory=list)  # urls: columns carried into each record's meta["extra"]
    list_columns: Optional[list[str]] = None  # urls: names of a CSV/TSV list's columns when it has no header line (CC3M: [caption, url])
    download_threads: int = 16  # urls: parallel downloads per mining worker
    download_connect_timeout: float = 5.0  # urls: seconds to open a connection
    download_read_timeout: float = 10.0  # urls: seconds without a byte from the server
    download_total_timeout: float = 60.0  # urls: seconds for one image's whole body
    download_retries: int = 2  # urls: extra attempts after a 5xx or a timeout (nothing else is retried)
    download_backoff: float = 0.5  # urls: seconds before the first retry, doubling
    download_max_bytes: int = 20_000_000  # urls: larger bodies count as too_large
    download_max_redirects: int = 5  # urls: redirect hops followed
    download_opt_out: bool = True  # urls: skip images whose X-Robots-Tag says noai / noimageai / noindex
    download_user_agent: Optional[str] = None  # urls: User-Agent header; None = "ovseg-mine/<version> (...)"
    max_caption_chars: int = 1000  # longer captions are cut at a word boundary
    storage_options: dict[str, Any] = field(default_factory=dict)  # passed to fsspec
    dedup: str = "off"  # off | phash: an image whose perceptual hash (imagehash.phash) was seen before in its unit is skipped as duplicate_image
    dedup_max_distance: int = 0  # phash: Hamming distance (of 64 bits) at or below which two images count as one


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
    "pipelines.corpus.url_list",
)


def open_input(url: str, storage_options: dict[str, Any], skips: Counter) -> Optional[IO[bytes]]:
    """The planned input file ``url`` opened for reading, or None (counted as ``missing_shard``) when
    it is gone; other I/O errors propagate (a retry may cure them)."""
    try:
        return fsspec.open(url, "rb", **storage_options).open()
    except FileNotFoundError:
        logger.warning("missing shard %s", url)
        skips["missing_shard"] += 1
        return None


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
