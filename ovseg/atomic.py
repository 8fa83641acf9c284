"""Atomic local file writes: a temporary file beside the target, fsynced, then renamed over it.

The one local rule; :mod:`pipelines.storage.atomic` adds fsspec URLs on top of it. A reader sees the
old file or the complete new one, never a part; a failed write leaves no temporary file behind.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["temporary_path", "LocalAtomicFile", "committing", "atomic_open", "save_torch"]


def temporary_path(path: str | Path) -> str:
    """The temporary name ``path`` is written under before its rename (``<path>.tmp``)."""
    return f"{path}.tmp"


class LocalAtomicFile:
    """``file`` is open under the temporary name; :meth:`commit` renames it into place, :meth:`abort` drops it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_path(self.path)
        self.file: IO[bytes] = open(self.tmp, "wb")

    def commit(self) -> None:
        """Flush, fsync and close the file, then rename it over ``path``."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Close the file and remove it; ``path`` is left as it was."""
        self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


@contextmanager
def committing(target: Any) -> Iterator[IO[bytes]]:
    """Yield ``target.file``; ``target.commit()`` on a clean exit, ``target.abort()`` on error."""
    try:
        yield target.file
    except BaseException:
        target.abort()
        raise
    target.commit()


def atomic_open(path: str | Path) -> Any:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears complete on a clean exit, unchanged on error."""
    return committing(LocalAtomicFile(path))


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns ``path``."""
    import torch

    with atomic_open(path) as f:
        torch.save(obj, f)
    return Path(path)
