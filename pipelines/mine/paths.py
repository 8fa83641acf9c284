"""Where a mining run reads and writes: local paths resolved once on the driver, storage checks.

Ray actors run in the working directory of the node that started them, not in the directory the job
was started from, so a relative path means something different on the driver and in every actor.
:func:`resolve_local_paths` makes every local path of the config absolute against the *job's*
working directory before the config leaves the driver. :func:`check_output_shared` refuses a
node-local output on a cluster with more than one node (each node would hold part of the shards).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ovseg.clip import WEIGHT_FILE_SUFFIXES
from pipelines.config.cli import StartupError

#: Config fields (``section.field``) that may hold a local path (or a brace pattern / glob of them).
LOCAL_PATH_FIELDS: tuple[str, ...] = (
    "corpus.url",
    "corpus.images_url",
    "clip.checkpoint",
    "clip.pretrained",  # only when it names a weight file (see :func:`_is_path_like`)
    "clip.prompt",  # a tuned mask prompt (re-mining); absent from configs without it
    "proposals.instances_url",
    "proposals.panoptic_url",
    "proposals.panoptic_root",
    "proposals.checkpoint",  # maskformer weights
    "output.url",
)


class StorageError(StartupError):
    """The output location cannot be used as configured (e.g. node-local on a multi-node cluster)."""


def is_local(url: str) -> bool:
    """True for a plain path or a ``file://`` / ``local://`` URL (storage of one machine)."""
    if "://" not in url:
        return "::" not in url  # fsspec chains (``simplecache::s3://...``) are not local
    return url.split("://", 1)[0] in ("file", "local")


def resolve_path(url: str, base: str | Path) -> str:
    """``url`` made absolute against ``base`` when it is a relative local path; otherwise unchanged.

    ``file://rel/x`` keeps its scheme: ``file:///base/rel/x``.
    """
    if not url or not is_local(url):
        return url
    scheme, sep, path = url.rpartition("://")
    if os.path.isabs(path):
        return url
    absolute = os.path.normpath(os.path.join(str(base), path))
    return f"{scheme}://{absolute}" if sep else absolute


def _is_path_like(key: str, value: str) -> bool:
    if key == "clip.pretrained":  # a tag such as "openai" is not a path
        return value.endswith(WEIGHT_FILE_SUFFIXES)
    return True


def resolve_local_paths(cfg: Any, base: str | Path | None = None) -> Any:
    """A copy of ``cfg`` whose local path fields (:data:`LOCAL_PATH_FIELDS`) are absolute.

    Args:
        cfg: a config dataclass with (some of) the sections named in :data:`LOCAL_PATH_FIELDS`.
        base: the directory relative paths are relative to; default the current working directory
            (the directory the job was started in).
    """
    base = Path(base) if base is not None else Path.cwd()
    out = copy.deepcopy(cfg)
    for key in LOCAL_PATH_FIELDS:
        section_name, field_name = key.split(".")
        section = getattr(out, section_name, None)
        value = getattr(section, field_name, None) if section is not None else None
        if isinstance(value, str) and value and _is_path_like(key, value):
            setattr(section, field_name, resolve_path(value, base))
    return out


def check_output_shared(url: str, *, alive_nodes: int, shared_filesystem: bool) -> None:
    """Refuse a node-local ``url`` when the Ray cluster has more than one alive node.

    Raises:
        StorageError: one line saying what to use instead.
    """
    if alive_nodes > 1 and is_local(url) and not shared_filesystem:
        raise StorageError(
            f"output.url={url} is local to one machine but the Ray cluster has {alive_nodes} nodes: "
            "use shared storage (s3://, gs://, ...) or declare a shared mount with output.shared_filesystem=true")
