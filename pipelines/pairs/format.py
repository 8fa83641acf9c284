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
INDEX_NAME = "pairs-{:06d}.parquet"  # one unit's index: a row per pair (INDEX_COLUMNS), covered by the marker
CANDIDATES_NAME = "pairs-{:06d}.candidates.jsonl.gz"  # optional: every image's candidate masks, nouns, similarities
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


def shard_index(name: str) -> Optional[int]:
    """The unit number of a shard base name ``pairs-000007.tar`` (None for any other name)."""
    m = re.fullmatch(r"pairs-(\d{6})\.tar", name)
    return int(m.group(1)) if m else None


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
    strategy: str = "best_mask"  # matching strategy that gave the noun this mask (ovseg.matching)
    evidence: dict = dataclasses.field(default_factory=dict)  # the strategy's own numbers (one_to_one: own_best_mask/score; dual_softmax: prob, noun_over_masks, mask_over_nouns; context view: view_scores)
    candidates: int = 0  # masks of the image large enough to take part (a random choice picks among them)
    mask_rle: Optional[dict] = None  # the mask in source pixels, COCO compressed RLE {"size": [H, W], "counts": str}
    caption_index: Optional[int] = None  # index of `caption` among the image's captions
    noun_span: Optional[list[int]] = None  # [start, end) characters of the noun (or its plural / last word) in that caption
    image_sha256: Optional[str] = None  # SHA-256 of the source image's encoded bytes
    clip_hash: Optional[str] = None  # 12 hex digits of SHA-256: the CLIP checkpoint file, else the loaded state dict
    prompt_hash: Optional[str] = None  # 12 hex digits of SHA-256 of the tuned prompt export (clip_prompt)
    proposal_hash: Optional[str] = None  # 12 hex digits of SHA-256 of the proposal weights file (maskformer), else null
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


def mask_to_rle(mask: Any) -> dict[str, Any]:
    """``[H,W]`` bool mask (numpy or torch) → COCO compressed RLE ``{"size": [H, W], "counts": str}``."""
    import numpy as np
    from pycocotools import mask as mask_utils

    array = mask.cpu().numpy() if hasattr(mask, "cpu") else np.asarray(mask)
    rle = mask_utils.encode(np.asfortranarray(array.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> Any:
    """Inverse of :func:`mask_to_rle`: bool numpy ``[H,W]``."""
    from pycocotools import mask as mask_utils

    counts = rle["counts"].encode("ascii") if isinstance(rle["counts"], str) else rle["counts"]
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


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
    for name, want in stats.get("files", {}).items():  # side files (index, candidates) the marker covers
        try:
            with fsspec.open(f"{out_url.rstrip('/')}/{name}", "rb", **(storage_options or {})) as f:
                data = f.read()
        except FileNotFoundError:
            return f"{name} missing"
        if len(data) != want["bytes"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
            return f"{name} differs from the marker's size / SHA-256"
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


# ----------------------------------------------------------------------------- index
#: columns of ``pairs-%06d.parquet``, one row per pair in tar order: name → (pyarrow type name, meaning)
INDEX_COLUMNS = {
    "key": ("string", "the pair's sample key in the tar"),
    "noun": ("string", "the noun"),
    "score": ("float64", "CLIP similarity of the crop and the noun"),
    "runner_up": ("string", "best other noun on the mask (null with one noun)"),
    "runner_up_score": ("float64", "its similarity (null with one noun)"),
    "margin": ("float64", "score - runner_up_score (null with one noun)"),
    "image_key": ("string", "the source image's corpus key"),
    "image_id": ("string", "COCO / corpus image id as text (null when none)"),
    "url": ("string", "source_url of the pair's json"),
    "image_sha256": ("string", "SHA-256 of the source image bytes"),
    "box": ("list<int64>", "crop box [x0, y0, x1, y1] in source pixels"),
    "area": ("int64", "mask area in source pixels"),
    "backend": ("string", "proposal backend"),
    "strategy": ("string", "matching strategy"),
    "candidates": ("int64", "masks the noun could have taken"),
}


def index_row(key: str, meta: PairMeta) -> dict[str, Any]:
    """The index row of one pair (the values of its json under :data:`INDEX_COLUMNS`' names)."""
    return {"key": key, "noun": meta.noun, "score": float(meta.score), "runner_up": meta.runner_up_noun,
            "runner_up_score": meta.runner_up_score, "margin": meta.margin, "image_key": meta.image_key,
            "image_id": None if meta.image_id is None else str(meta.image_id), "url": meta.source_url,
            "image_sha256": meta.image_sha256, "box": [int(v) for v in meta.box], "area": int(meta.area),
            "backend": meta.proposal_backend, "strategy": meta.strategy, "candidates": int(meta.candidates)}


def index_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64(), "list<int64>": pa.list_(pa.int64())}
    return pa.schema([(name, types[t]) for name, (t, _) in INDEX_COLUMNS.items()])


def index_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """A parquet file of ``rows`` (:func:`index_row`) with the fixed :data:`INDEX_COLUMNS` schema."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = index_schema()
    table = pa.Table.from_pylist(list(rows), schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class IndexMismatch(ValueError):
    """A unit's parquet index is missing or is not the one its commit marker describes."""


def read_index(out_url: str, index: int, storage_options: Optional[dict] = None):
    """Unit ``index``'s parquet index as a pyarrow Table, checked against its commit marker.

    Raises:
        IndexMismatch: no marker, the marker records no index, or the file's size / SHA-256
            differ from the marker's (a stale or foreign index).
    """
    import hashlib
    import io

    import pyarrow.parquet as pq

    stats = read_marker(out_url, index, storage_options)
    name = INDEX_NAME.format(index)
    if stats is None:
        raise IndexMismatch(f"{name}: no readable commit marker")
    want = stats.get("files", {}).get(name)
    if want is None:
        raise IndexMismatch(f"{name}: the commit marker records no index (shard written before indexes?)")
    try:
        with fsspec.open(f"{out_url.rstrip('/')}/{name}", "rb", **(storage_options or {})) as f:
            data = f.read()
    except FileNotFoundError:
        raise IndexMismatch(f"{name}: missing") from None
    if len(data) != want["bytes"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
        raise IndexMismatch(f"{name}: size or SHA-256 differs from its commit marker")
    return pq.read_table(io.BytesIO(data))


def read_folder_index(out_url: str, storage_options: Optional[dict] = None):
    """The index of every committed unit of ``out_url``, concatenated, with a ``unit`` column."""
    import pyarrow as pa

    tables = []
    for i in committed_indices(list_names(out_url, storage_options)):
        t = read_index(out_url, i, storage_options)
        tables.append(t.append_column("unit", pa.array([i] * t.num_rows, pa.int64())))
    if not tables:
        return index_schema().empty_table().append_column("unit", pa.array([], pa.int64()))
    return pa.concat_tables(tables)
