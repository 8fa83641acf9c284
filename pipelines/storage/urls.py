"""fsspec URL helpers shared by every reader: expand a URL pattern, parent folder, join.

One expansion for corpus inputs and pair shards alike (:func:`expand_urls`); the pair reader adds
its commit filter on top (:func:`pipelines.pairs.format.shard_urls`).
"""
from __future__ import annotations

import logging
import posixpath
from typing import Optional

import fsspec
from braceexpand import braceexpand
from fsspec.core import has_magic, url_to_fs

logger = logging.getLogger(__name__)

__all__ = ["expand_urls", "parent_url", "join_url", "basename", "storage_problem"]


def _has_protocol(url: str) -> bool:
    return "://" in url


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _to_url(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Give ``path`` back a protocol unless ``like`` was a plain local path."""
    if not _has_protocol(like) and "file" in _protocols(fs):
        return path
    return fs.unstrip_protocol(path)


def expand_urls(
    url: str, suffixes: tuple[str, ...], storage_options: Optional[dict] = None
) -> list[str]:
    """Expand one URL pattern into a sorted list of file URLs.

    ``url`` may be a brace pattern (``shard-{00000..00009}.tar``, each part may hold a glob), a glob
    (``data/*.parquet``), a directory (searched recursively for names ending in ``suffixes``) or
    one file. Brace-expanded and single names are kept even when missing (readers count
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


def basename(url: str) -> str:
    """The file name of a URL or path (``s3://b/x/y.tar`` -> ``y.tar``)."""
    return posixpath.basename(url.rpartition("://")[2])


def join_url(base: str, rel: str) -> str:
    """Join a relative path onto a folder URL; absolute paths and full URLs are returned as is."""
    if _has_protocol(rel) or rel.startswith("/"):
        return rel
    while rel.startswith("./"):
        rel = rel[2:]
    return f"{base.rstrip('/')}/{rel}"


CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError",
                     "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken")


def storage_problem(err: BaseException, *, key: str, url: str) -> str:
    """One line saying why ``url`` (the value of config key ``key``) cannot be read and what to do.

    The credentials case names where fsspec looks for them and the ``*storage_options`` key next to ``key``.
    """
    chain, seen = [], err
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = " ".join(type(e).__name__ + " " + str(e) for e in chain)
    options = key.rsplit(".", 1)[0] + ".storage_options"
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    if any(name in names for name in CREDENTIAL_ERRORS) or "credentials" in names.lower():
        return (f"{key}={url}: no usable credentials for {url.split('://', 1)[0]}:// ({first}); set them in the "
                f"environment (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), the provider's config file, or {options}")
    if isinstance(err, FileNotFoundError):
        return f"{key}={url}: not found ({first}); check the path"
    return f"{key}={url}: cannot be read ({type(err).__name__}: {first}); check the URL and {options}"
