"""Writing pair shards on any fsspec file system: write, commit, find committed units, sizes.json.

Names, metadata and the commit rule belong to :mod:`pipelines.pairs.format`. A unit's tar is written under a temporary name and renamed when complete; its
``pairs-%06d.stats.json`` is written *after* that (also via a temporary name) and is the commit
marker. A tar without its stats file is not committed: the next run deletes and redoes it, and
readers ignore it. So a killed run never leaves anything that looks complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any

import fsspec
import webdataset as wds
from fsspec.core import url_to_fs

from ovseg.atomic import temporary_path
from pipelines.pairs.format import (CANDIDATES_NAME, INDEX_NAME, SHARD_NAME, SIZES_NAME, STATS_NAME, committed_indices, list_sizes, marker_matches,
                                   sizes_of)
from pipelines.storage.atomic import AtomicFile, write_bytes

log = logging.getLogger(__name__)


class _CountingFile:
    """A write-only file wrapper that counts the bytes written and hashes them (SHA-256)."""

    def __init__(self, raw) -> None:
        self.raw, self.size, self.digest = raw, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        self.digest.update(data)
        return self.raw.write(data)

    def close(self) -> None:
        self.raw.close()


class ShardWriter:
    """Writes one unit's pairs into ``pairs-%06d.tar`` and commits it with its stats.

    Use as ``w = ShardWriter(out, 7); w.write(sample) ...; w.commit(stats)``; on error call
    :meth:`abort` (the context manager does it), which removes the partial file.
    """

    def __init__(self, out_url: str, index: int, storage_options: dict[str, Any] | None = None) -> None:
        self.fs, root = url_to_fs(out_url, **(storage_options or {}))
        self.root = root.rstrip("/")
        self.index = index
        self.path = f"{self.root}/{SHARD_NAME.format(index)}"
        self.tmp_path = temporary_path(self.path)
        self.stats_path = f"{self.root}/{STATS_NAME.format(index)}"
        self.count = 0
        self._side: dict[str, bytes] = {}
        self.fs.makedirs(self.root, exist_ok=True)
        # A unit is redone from scratch: its marker first (so nothing reads as committed meanwhile),
        # then every file of the unit and their temporaries a killed run may have left behind.
        unit_files = [self.stats_path, *(f"{self.root}/{name.format(index)}"
                                         for name in (SHARD_NAME, INDEX_NAME, CANDIDATES_NAME))]
        for stale in unit_files + [temporary_path(f) for f in unit_files]:
            if self.fs.exists(stale):
                self.fs.rm(stale)
        self._target = AtomicFile(self.path, fs=self.fs)
        self._file = _CountingFile(self._target.file)
        self._tar = wds.TarWriter(self._file, encoder=False, mtime=1.0)

    def write(self, sample: dict[str, Any]) -> None:
        """Write one sample: ``__key__`` plus extension → bytes (all files adjacent in the tar)."""
        key = sample["__key__"]
        if "." in key:
            raise ValueError(f"shard keys must not contain dots: {key!r}")
        self._tar.write(sample)
        self.count += 1

    def add_side_file(self, name: str, data: bytes) -> None:
        """A file of this unit beside its tar (e.g. ``pairs-000007.parquet``), written at
        :meth:`commit` before the marker, which records its size and SHA-256 under ``files``."""
        self._side[name] = data

    def commit(self, stats: dict[str, Any]) -> None:
        """Close the tar, move it to its final name, write the side files, then the stats file (the commit).

        The stats carry the tar's byte size and SHA-256 (``tar_bytes``, ``tar_sha256``): on object
        stores, where "rename" is copy + delete, a reader checks the tar it sees against them; the
        same for every side file (``files: {name: {"bytes", "sha256"}}``).
        """
        self._tar.close()
        self._target.commit()
        files = {}
        for name, data in self._side.items():
            write_bytes(f"{self.root}/{name}", data, fs=self.fs)
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        payload = dict(stats, pairs_written=self.count, tar_bytes=self._file.size,
                       tar_sha256=self._file.digest.hexdigest())
        if files:
            payload["files"] = files
        write_bytes(self.stats_path, json.dumps(payload, indent=1, sort_keys=True).encode(), fs=self.fs)

    def abort(self) -> None:
        """Drop the partial tar."""
        try:
            self._tar.close()
        finally:
            self._target.abort()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def committed_units(out_url: str, storage_options: dict[str, Any] | None = None) -> dict[int, dict]:
    """``unit index → stats`` for every committed unit under ``out_url``: stats file and tar present,
    and the tar's size equal to the ``tar_bytes`` its stats recorded (when they record it)."""
    fs, root = url_to_fs(out_url, **(storage_options or {}))
    sizes = list_sizes(out_url, storage_options)
    out: dict[int, dict] = {}
    for index in committed_indices(sizes):
        name = STATS_NAME.format(index)
        try:
            with fs.open(f"{root.rstrip('/')}/{name}", "rb") as f:
                stats = json.loads(f.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("unreadable stats file %s: unit will be redone", name)
            continue
        if not marker_matches(stats, sizes[SHARD_NAME.format(index)]):
            log.warning("%s does not match its commit marker %s: unit will be redone", SHARD_NAME.format(index), name)
            continue
        out[index] = stats
    return out


def write_sizes(out_url: str, stats: dict[int, dict], storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Write ``sizes.json`` (shard name → pair count) for all committed units; returns it."""
    fs, root = url_to_fs(out_url, **(storage_options or {}))
    sizes = sizes_of({i: s.get("pairs_written", s.get("pairs", 0)) for i, s in stats.items()})
    fs.makedirs(root, exist_ok=True)
    write_bytes(f"{root.rstrip('/')}/{SIZES_NAME}", json.dumps(sizes, indent=1).encode(), fs=fs)
    return sizes


def encode_jpeg(array, quality: int = 90) -> bytes:
    """``[H,W,3]`` uint8 array → JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(array) -> bytes:
    """``[H,W]`` uint8 array → PNG bytes (mode L)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array, mode="L").save(buf, format="PNG")
    return buf.getvalue()
