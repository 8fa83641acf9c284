"""Atomic writes on any fsspec file system: the one place that writes a file under a temporary
name and moves it into place.

Local paths follow :mod:`ovseg.atomic` (fsync, then ``os.replace``); other file systems write
``<url>.tmp`` and ``fs.mv`` it (on object stores a copy + delete: readers check what they need,
e.g. a shard against the size and SHA-256 its stats file records).
"""
from __future__ import annotations

from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from ovseg.atomic import LocalAtomicFile, committing, temporary_path

__all__ = ["AtomicFile", "atomic_write", "write_bytes"]


class AtomicFile:
    """A file opened under its temporary name; :meth:`commit` moves it into place, :meth:`abort` drops it.

    For writers that keep the file open across calls (a shard's tar); otherwise use :func:`atomic_write`.
    """

    def __init__(self, url: str, *, fs: fsspec.AbstractFileSystem | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        if fs is None:
            fs, url = url_to_fs(url, **(storage_options or {}))
        self.fs, self.path, self.tmp = fs, url, temporary_path(url)
        self._local = LocalAtomicFile(url) if isinstance(fs, LocalFileSystem) else None
        self.file: IO[bytes] = self._local.file if self._local is not None else fs.open(self.tmp, "wb")

    def commit(self) -> None:
        """Close the file and move it to its final name."""
        if self._local is not None:
            self._local.commit()
        else:
            self.file.close()
            self.fs.mv(self.tmp, self.path)

    def abort(self) -> None:
        """Close the file and remove the temporary one (the final name is left as it was)."""
        if self._local is not None:
            self._local.abort()
            return
        try:
            self.file.close()
        finally:
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)


def atomic_write(url: str, *, fs: fsspec.AbstractFileSystem | None = None,
                 storage_options: dict[str, Any] | None = None) -> Any:
    """``with atomic_write(url) as f: f.write(...)``: ``url`` appears complete on a clean exit, unchanged on error."""
    return committing(AtomicFile(url, fs=fs, storage_options=storage_options))


def write_bytes(url: str, data: bytes, *, fs: fsspec.AbstractFileSystem | None = None,
                storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` to ``url`` atomically."""
    with atomic_write(url, fs=fs, storage_options=storage_options) as f:
        f.write(data)
