"""Training checkpoints: atomic writes, discovery of the latest one, RNG state capture/restore.

A checkpoint ``ckpt-%08d.pt`` holds only plain containers and tensors, so it loads with
``torch.load(weights_only=True)``:

``{"step", "samples", "trainable": {param name: tensor}, "optimizer", "scheduler",
"rng": [per-rank RNG states], "world_size", "config": dict, "format": "ovseg-tune/1"}``

Next to each one, ``ckpt-%08d.pt.sha256`` holds the SHA-256 of its bytes, written after it. A
checkpoint whose bytes do not match its digest, or that does not load, is *damaged*:
:func:`load_latest_intact` skips it (logged and returned) and takes the newest intact one.
"""
from __future__ import annotations

import hashlib
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovseg.atomic import atomic_open, save_torch

log = logging.getLogger(__name__)

FORMAT = "ovseg-tune/1"
_NAME_RE = re.compile(r"^ckpt-(\d{8})\.pt$")


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"ckpt-{step:08d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete checkpoint in ``out_dir``, oldest first."""
    folder = Path(out_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def digest_path(path: str | Path) -> Path:
    """Where the SHA-256 of checkpoint ``path`` is kept."""
    return Path(f"{path}.sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """``torch.save`` atomically (:func:`ovseg.atomic.save_torch`) plus the checkpoint's SHA-256 next
    to it (written second, also atomically)."""
    path = save_torch(state, path)
    with atomic_open(digest_path(path)) as f:
        f.write((_sha256(path) + "\n").encode())
    return path


def prune(out_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (with their digests)."""
    for _, path in list_checkpoints(out_dir)[:-keep_last]:
        path.unlink(missing_ok=True)
        digest_path(path).unlink(missing_ok=True)


def load_latest_intact(out_dir: str | Path, fmt: str = FORMAT) -> tuple[Path, dict, list[tuple[Path, str]]] | None:
    """``(path, state, damaged)`` of the newest checkpoint that loads and matches its digest, with
    ``damaged`` the newer ones skipped and why; None when there is no intact checkpoint at all."""
    damaged: list[tuple[Path, str]] = []
    for _, path in reversed(list_checkpoints(out_dir)):
        try:
            return path, load_checkpoint(path, fmt=fmt), damaged
        except Exception as err:  # torch raises many types on a damaged file
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            log.warning("checkpoint %s is damaged (%s); trying the previous one", path, reason)
            damaged.append((path, reason))
    if damaged:
        log.warning("no intact checkpoint in %s (%d damaged): starting from scratch", out_dir, len(damaged))
    return None


def resolve_resume(resume: str, out_dir: str | Path, fmt: str = FORMAT) -> tuple[str | Path, dict, list[tuple[Path, str]]] | None:
    """What ``run.resume`` names: ``(source, state, damaged)`` or None (``never``, or ``auto`` with no
    intact checkpoint). ``auto`` takes the newest intact checkpoint in ``out_dir`` (``damaged``: the newer
    ones skipped and why); any other value is a checkpoint path, loaded as it is."""
    if resume == "never":
        return None
    if resume == "auto":
        return load_latest_intact(out_dir, fmt=fmt)
    return resume, load_checkpoint(resume, fmt=fmt), []


def load_checkpoint(path: str | Path, fmt: str = FORMAT) -> dict:
    """A checkpoint whose ``format`` tag is ``fmt`` (the tuning job's by default), loaded weights-only;
    checks its SHA-256 when its digest file exists.

    Raises:
        ValueError: digest mismatch, or not a checkpoint of format ``fmt``.
    """
    digest = digest_path(path)
    if digest.exists() and digest.read_text().strip() != _sha256(Path(path)):
        raise ValueError(f"{path}: SHA-256 does not match {digest.name}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise ValueError(f"{path} is not a training checkpoint of format {fmt}")
    return obj


def rng_state() -> dict:
    """This process's RNG states as plain containers (torch, CUDA, numpy, python)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x
