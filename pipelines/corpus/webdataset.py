"""WebDataset reader for img2dataset-style tars: one tar = one unit of work.

A sample is the run of tar members sharing a key (the member path up to the first dot of its
file name, as in WebDataset): one image (``jpg``/``jpeg``/``png``/``webp``/...), ``txt`` with
*one* caption (newlines are folded into spaces) and an optional ``json`` whose ``captions`` list
adds more captions (``caption`` is used when there is no ``txt``) and whose ``url`` gives the
source URL. Tars are read as a stream (any fsspec URL, ``.tar.gz`` too).

Skip reasons:
    ``missing_shard``     a planned tar is absent
    ``truncated_tar``     the tar is empty or ends inside a member or header (once per tar); the
                          samples completed before the cut are kept, the one being read is dropped
    ``corrupt_tar``       not a tar, or a damaged header (samples read before it are kept)
    ``missing_image``     a sample without an image member
    ``duplicate_member``  a second member with the same key and extension (the first one wins)
    ``bad_json``          a ``json`` member that does not parse (the sample is kept)
    ``unsafe_link`` / ``unsafe_path``  a symlink / hard link, or an absolute or ``..`` member name
                          (:mod:`pipelines.storage.tar_safety`): refused, never followed
plus the caption reasons of :func:`pipelines.records.clean_caption`.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tarfile
import zlib
from collections import Counter
from typing import Any, Iterator, Optional


from pipelines.corpus.base import CorpusConfig, open_input, register_reader
from pipelines.storage.tar_safety import ended_cleanly, safe_file_members
from pipelines.storage.urls import expand_urls
from pipelines.records import ImageRecord, WorkUnit, clean_captions, sanitize_key

logger = logging.getLogger(__name__)

__all__ = ["WebDatasetReader", "IMAGE_EXTENSIONS", "split_member_name"]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# First match wins when a sample holds several images.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff", "gif")


def split_member_name(name: str) -> tuple[str, str]:
    """``"dir/000123.seg.png"`` -> ``("dir/000123", "seg.png")`` (extension lower-cased)."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


@register_reader("webdataset")
class WebDatasetReader:
    """Reads img2dataset-style WebDataset tars (local or remote, via fsspec)."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg

    def plan_units(self) -> list[WorkUnit]:
        """One unit per tar, tars sorted by URL."""
        urls = expand_urls(self.cfg.url, TAR_SUFFIXES, self.cfg.storage_options)
        return [WorkUnit(index=i, source=u) for i, u in enumerate(urls)]

    def read_unit(self, unit: WorkUnit, skips: Counter) -> Iterator[ImageRecord]:
        """Samples of one tar, in tar order."""
        shard = posixpath.basename(unit.source)
        for key, files in self._samples(unit.source, skips):
            record = self._to_record(key, files, shard, skips=skips)
            if record is not None:
                yield record

    # ------------------------------------------------------------------ tar stream -> samples

    def _samples(self, url: str, skips: Counter) -> Iterator[tuple[str, dict[str, bytes]]]:
        """Group consecutive members by key; yields ``(key, {ext: bytes})``."""
        f = open_input(url, self.cfg.storage_options, skips)
        if f is None:
            return
        key: Optional[str] = None
        files: dict[str, bytes] = {}
        n_done = 0
        try:
            with tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in safe_file_members(tar, skips, where=url):
                    member_key, ext = split_member_name(member.name)
                    if posixpath.basename(member_key).startswith((".", "__")) or not ext:
                        continue  # hidden / metadata files, WebDataset ignores them too
                    if member_key != key:  # the previous sample is complete
                        if key is not None:
                            n_done += 1
                            yield key, files
                        key, files = member_key, {}
                    if ext in files:
                        skips["duplicate_member"] += 1
                        continue
                    files[ext] = tar.extractfile(member).read()
                complete = ended_cleanly(tar)
        except (tarfile.ReadError, EOFError, zlib.error) as e:  # I/O errors propagate (retry)
            reason = "truncated_tar" if _is_truncation(e) else "corrupt_tar"
            logger.warning("%s in %s after %d complete samples: %s", reason, url, n_done, e)
            skips[reason] += 1
            return
        finally:
            f.close()
        if key is None:
            return
        if complete:
            yield key, files
        else:
            logger.warning("truncated_tar: %s has no end-of-archive marker", url)
            skips["truncated_tar"] += 1

    # ------------------------------------------------------------------ sample -> record

    def _to_record(
        self, key: str, files: dict[str, bytes], shard: str, *, skips: Counter
    ) -> Optional[ImageRecord]:
        image_ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
        if image_ext is None:
            skips["missing_image"] += 1
            return None
        info: dict[str, Any] = {}
        if "json" in files:
            try:
                loaded = json.loads(files["json"])
                info = loaded if isinstance(loaded, dict) else {}
            except (ValueError, UnicodeDecodeError):
                skips["bad_json"] += 1
        raws: list[Any] = []
        if "txt" in files:
            raws.append(files["txt"])
        elif isinstance(info.get("caption"), str):
            raws.append(info["caption"])
        extra = info.get("captions")
        if isinstance(extra, list):
            raws.extend(c for c in extra if isinstance(c, (str, bytes)))
        source_url = info.get("url")
        return ImageRecord(
            key=sanitize_key(key),
            captions=clean_captions(raws, self.cfg.max_caption_chars, skips),
            image_bytes=files[image_ext],
            image_id=info.get("key", key),
            source_url=source_url if isinstance(source_url, str) else None,
            meta={"shard": shard, "image_ext": image_ext},
        )


def _is_truncation(e: BaseException) -> bool:
    text = str(e).lower()
    words = ("unexpected end", "truncated", "empty")
    return isinstance(e, EOFError) or any(w in text for w in words)
