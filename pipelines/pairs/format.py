"""The pair-shard format: the one description of what ``jobs/mine.py`` writes and the rest reads.

An output folder holds, per unit of work ``i``:

* ``pairs-%06d.tar`` (WebDataset): one sample per (masked crop, noun) pair, key
  ``u{unit:06d}_{image_key}_{k:03d}`` (no dots), members :data:`MEMBERS`:
  ``jpg`` the masked crop (S×S RGB, outside the mask filled with CLIP's mean colour),
  ``png`` its mask (mode "L", 255 inside), ``txt`` the noun (UTF-8), ``json`` a :class:`PairMeta`;
* ``pairs-%06d.stats.json``: the unit's counters, written *after* the tar; it is the commit
  marker: a tar without it is half-written and every reader ignores it;

and once per folder ``sizes.json`` ``{"pairs-000000.tar": n_pairs, ...}`` (open_clip reads it).

This module owns the names, the metadata record, the commit check and the one tar reader; the
writer with its atomic renames is :mod:`pipelines.pairs.writer`. ``docs/CONTRACTS.md`` lists the json
fields and a test keeps it equal to :class:`PairMeta`.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import re
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable, Iterator, Optional, Sequence

import fsspec
from fsspec.core import url_to_fs

from pipelines.records import SkipSample
from pipelines.storage.tar_safety import ended_cleanly, safe_file_members
from pipelines.storage.urls import basename, expand_urls, parent_url

log = logging.getLogger(__name__)

SHARD_NAME = "pairs-{:06d}.tar"  # one unit's pairs
STATS_NAME = "pairs-{:06d}.stats.json"  # one unit's stats = its commit marker
SIZES_NAME = "sizes.json"  # shard name → pair count, for the whole folder
MEMBERS = ("jpg", "png", "txt", "json")  # the files of every pair sample, in tar order
_STATS_RE = re.compile(r"pairs-(\d{6})\.stats\.json$")


# ----------------------------------------------------------------------------- names
def shard_url(out_url: str, index: int) -> str:
    """URL of unit ``index``'s tar under the output folder ``out_url``."""
    return f"{out_url.rstrip('/')}/{SHARD_NAME.format(index)}"


def stats_url(out_url: str, index: int) -> str:
    """URL of unit ``index``'s commit marker under ``out_url``."""
    return f"{out_url.rstrip('/')}/{STATS_NAME.format(index)}"


def sizes_url(out_url: str) -> str:
    """URL of the folder's ``sizes.json``."""
    return f"{out_url.rstrip('/')}/{SIZES_NAME}"


def pair_key(unit: int, image_key: str, index: int) -> str:
    """Sample key of the ``index``-th noun of image ``image_key`` in unit ``unit`` (no dots)."""
    return f"u{unit:06d}_{image_key}_{index:03d}"


# ----------------------------------------------------------------------------- metadata
@dataclass(kw_only=True)
class PairMeta:
    """The ``json`` member of a pair: everything that decided the pair, and where it came from."""

    noun: str  # the noun (same text as the txt member)
    score: float  # CLIP cosine similarity of the crop and the noun's text embedding
    runner_up_noun: Optional[str]  # best other noun of the image on this mask; None with one noun
    runner_up_score: Optional[float]  # that noun's similarity on this mask; None with one noun
    margin: Optional[float]  # score - runner_up_score; None with one noun
    caption: Optional[str]  # first caption of the image naming the noun
    image_key: str  # key of the source image in the corpus (no dots)
    image_id: int | str | None  # COCO image id or corpus id, when the corpus has one
    source_url: Optional[str]  # original image URL, else the image's fsspec URL, else None
    box: list[int]  # crop box [x0, y0, x1, y1] in source pixels (x1, y1 exclusive)
    area: int  # mask area in source pixels
    image_size: list[int]  # [H, W] of the source image
    proposal_backend: str  # proposal backend that produced the mask (superpixel, gt, ...)
    proposal_index: int  # index of the mask among the image's proposals
    proposal_score: float  # the backend's score of that mask
    unit: int  # unit of work = shard number
    clip_model: str  # name of the CLIP that scored the pair
    clip_prompt: Optional[str] = None  # tuned mask prompt file the crops were scored with (re-mining), else None
    extra: Optional[dict] = None  # URL-list corpora: the row's corpus.extra_columns ({column: value}), else None

    def to_json(self) -> bytes:
        """The member's bytes (field order as declared)."""
        return json.dumps(dataclasses.asdict(self)).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "PairMeta":
        """Parse a ``json`` member; unknown keys are ignored.

        Raises:
            SkipSample: ``corrupt_meta`` when it is not a JSON object with every field.
        """
        try:
            obj = json.loads(data)
            return cls(**{f.name: obj[f.name] for f in dataclasses.fields(cls)
                          if f.name in obj or f.default is dataclasses.MISSING})
        except (ValueError, TypeError, KeyError) as err:
            raise SkipSample("corrupt_meta", f"{type(err).__name__}: {err}") from None


def pair_sample(*, key: str, jpg: bytes, png: bytes, meta: PairMeta) -> dict[str, Any]:
    """One pair as a WebDataset sample dict (members in :data:`MEMBERS` order)."""
    return {"__key__": key, "jpg": jpg, "png": png, "txt": meta.noun.encode("utf-8"), "json": meta.to_json()}


# ----------------------------------------------------------------------------- commit check
def is_committed(name: str, names: Iterable[str]) -> bool:
    """Whether the tar ``name`` has its commit marker in the folder listing ``names`` (base names)."""
    return name.endswith(".tar") and name[: -len(".tar")] + ".stats.json" in set(names)


def committed_indices(names: Iterable[str]) -> list[int]:
    """Sorted unit indices whose tar and commit marker are both in the listing ``names``."""
    names = set(names)
    indices = (int(m.group(1)) for n in names if (m := _STATS_RE.fullmatch(n)))
    return sorted(i for i in indices if SHARD_NAME.format(i) in names)


def list_names(folder_url: str, storage_options: Optional[dict] = None) -> set[str]:
    """Base names in a folder (empty when it does not exist)."""
    return set(list_sizes(folder_url, storage_options))


def list_sizes(folder_url: str, storage_options: Optional[dict] = None) -> dict[str, int]:
    """``base name → size in bytes`` of the files in a folder (empty when it does not exist).

    Always a fresh listing: object-store file systems (s3fs, gcsfs) cache listings per process,
    and other processes (actors, other runs) write here.
    """
    fs, root = url_to_fs(folder_url, **(storage_options or {}))
    fs.invalidate_cache(root)
    if not fs.isdir(root):
        return {}
    return {basename(e["name"]): int(e.get("size") or 0) for e in fs.ls(root, detail=True) if e.get("type") != "directory"}


def marker_matches(stats: dict, tar_size: int) -> bool:
    """Whether a tar of ``tar_size`` bytes is the one its commit marker ``stats`` describes.

    Markers written before ``tar_bytes`` existed are trusted by presence alone.
    """
    return "tar_bytes" not in stats or int(stats["tar_bytes"]) == int(tar_size)


def read_marker(out_url: str, index: int, storage_options: Optional[dict] = None) -> Optional[dict]:
    """Unit ``index``'s commit marker (None when absent or unreadable)."""
    try:
        with fsspec.open(stats_url(out_url, index), "rb", **(storage_options or {})) as f:
            stats = json.loads(f.read())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    return stats if isinstance(stats, dict) else None


def verify_shard(out_url: str, index: int, storage_options: Optional[dict] = None) -> Optional[str]:
    """Full check of one committed unit: None when its tar has the marker's size, SHA-256 and pair
    count, else what differs (reads the whole tar)."""
    import hashlib

    stats = read_marker(out_url, index, storage_options)
    if stats is None:
        return "no readable commit marker"
    digest, size = hashlib.sha256(), 0
    try:
        with fsspec.open(shard_url(out_url, index), "rb", **(storage_options or {})) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return "tar missing"
    if size != stats.get("tar_bytes", size):
        return f"size {size} != marker's {stats['tar_bytes']}"
    if digest.hexdigest() != stats.get("tar_sha256", digest.hexdigest()):
        return "SHA-256 differs from the marker's"
    keys = {s["__key__"] for s in iter_tar(shard_url(out_url, index), collections.Counter(), storage_options)}
    if len(keys) != stats.get("pairs_written", len(keys)):
        return f"{len(keys)} pairs != marker's {stats['pairs_written']}"
    return None


def committed_shards(urls: Sequence[str], storage_options: Optional[dict] = None) -> list[str]:
    """The ``urls`` that exist and, in folders that hold commit markers, are committed.

    A folder without any marker (tars from elsewhere) keeps every tar that exists.
    A committed tar whose size differs from the ``tar_bytes`` of its marker is left out too.
    """
    listings: dict[str, dict[str, int]] = {}
    kept: list[str] = []
    for url in urls:
        folder = parent_url(url)
        if folder not in listings:
            listings[folder] = list_sizes(folder, storage_options)
        names = listings[folder]
        marked = any(n.endswith(".stats.json") for n in names)
        name = basename(url)
        if name not in names or (marked and not is_committed(name, names)):
            continue
        if marked and (m := _STATS_RE.fullmatch(name[: -len(".tar")] + ".stats.json")):
            stats = read_marker(folder, int(m.group(1)), storage_options)
            if stats is None or not marker_matches(stats, names[name]):
                log.warning("%s does not match its commit marker: left out", url)
                continue
        kept.append(url)
    if len(kept) < len(urls):
        log.info("ignoring %d missing or uncommitted shards", len(urls) - len(kept))
    return kept


def shard_urls(spec: str, storage_options: Optional[dict] = None) -> list[str]:
    """Committed shard URLs of a source string: parts joined by ``::``, each a folder, brace
    pattern, glob or single shard (expanded by :func:`pipelines.storage.urls.expand_urls`; order of the
    parts kept).

    Raises:
        FileNotFoundError: when a part names no existing committed shard.
    """
    urls: list[str] = []
    for part in (p.strip() for p in spec.split("::")):
        if not part:
            continue
        found = committed_shards(expand_urls(part, (".tar",), storage_options), storage_options)
        if not found:
            raise FileNotFoundError(f"no shards found for {part!r}")
        urls.extend(found)
    return urls


# ----------------------------------------------------------------------------- sizes
def sizes_of(counts: dict[int, int]) -> dict[str, int]:
    """``sizes.json`` content from ``unit index → pair count``."""
    return {SHARD_NAME.format(i): int(n) for i, n in sorted(counts.items())}


def read_sizes(shards: Sequence[str], storage_options: Optional[dict] = None) -> dict[str, int]:
    """Sample counts of ``shards`` from the ``sizes.json`` next to them (missing ones left out)."""
    by_dir: dict[str, dict[str, int]] = {}
    sizes: dict[str, int] = {}
    for url in shards:
        folder = parent_url(url)
        if folder not in by_dir:
            try:
                with fsspec.open(sizes_url(folder), "rt", **(storage_options or {})) as f:
                    by_dir[folder] = {str(k): int(v) for k, v in json.load(f).items()}
            except (FileNotFoundError, OSError, ValueError) as err:
                log.warning("no usable %s in %s (%s)", SIZES_NAME, folder, err)
                by_dir[folder] = {}
        name = basename(url)
        if name in by_dir[folder]:
            sizes[url] = by_dir[folder][name]
    return sizes


# ----------------------------------------------------------------------------- reading
def iter_tar(url: str, skips: collections.Counter, storage_options: Optional[dict] = None) -> Iterator[dict]:
    """Samples of one tar shard: ``{"__key__", "__url__", ext: bytes, ...}``, grouped by key.

    A shard that cannot be opened or breaks midway is counted as ``shard_error``, one that stops
    without its end-of-archive marker (cut at a member boundary) as ``truncated_shard``; the
    samples read before the break are kept.
    """
    current: dict | None = None
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in safe_file_members(tar, skips, where=f"shard {url}"):
                key, _, ext = PurePosixPath(member.name).name.partition(".")
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                if current is None:
                    current = {"__key__": key, "__url__": url}
                data = tar.extractfile(member)
                current[ext.lower()] = data.read() if data is not None else b""
            if not ended_cleanly(tar):
                log.warning("shard %s: no end-of-archive marker (truncated)", url)
                skips["truncated_shard"] += 1
    except (OSError, tarfile.TarError, EOFError) as err:
        log.warning("shard %s: %s", url, err)
        skips["shard_error"] += 1
    if current is not None:
        yield current


def iter_committed(out_url: str, skips: collections.Counter,
                   storage_options: Optional[dict] = None) -> Iterator[dict]:
    """Samples of every committed shard of the folder ``out_url``, in unit order."""
    for index in committed_indices(list_names(out_url, storage_options)):
        yield from iter_tar(shard_url(out_url, index), skips, storage_options)
