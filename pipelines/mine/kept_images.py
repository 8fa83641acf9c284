"""Keeping the images a URL-list run downloaded (``output.keep_images``), img2dataset's way.

Per unit, in ``output.images_url`` (default: ``<output.url>_images``, a sibling, because pair
readers search ``output.url`` for tars): ``%05d.tar`` (WebDataset: ``<key>.jpg|png|webp|...`` as
downloaded, ``<key>.txt`` the first caption, ``<key>.json`` with ``key``, ``url``, ``caption``,
``captions``, ``image_id``, ``status``, ``width``, ``height``, ``extra``), ``%05d.parquet`` (one row
per kept image) and ``%05d_stats.json`` (``count``, ``successes``, ``failed_to_download``,
``status_dict``). All three are written before the unit's pair shard commits, under temporary
names renamed when complete, so a committed pair unit always has its images; an uncommitted unit is
redone and its files replaced. ``corpus.format=webdataset corpus.url=<images_url>`` re-mines them.
Images are stored as fetched (no re-encoding), so a re-mine sees the very bytes the first run saw,
unless ``output.keep_images_max_side`` shrinks the larger ones (JPEG, quality 95; ``width`` /
``height`` are then the stored size, ``original_*`` the downloaded one).
"""
from __future__ import annotations

import io
import json
import logging
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from fsspec.core import url_to_fs
from PIL import Image, ImageOps

from pipelines.corpus.fetch import download_summary
from pipelines.records import ImageRecord
from pipelines.storage.atomic import AtomicFile, write_bytes

log = logging.getLogger(__name__)

__all__ = ["ImageKeeper", "images_url_of", "image_extension"]


def images_url_of(out_url: str, images_url: str | None) -> str:
    """Where kept images go: ``images_url``, else ``<out_url>_images``."""
    return images_url or out_url.rstrip("/") + "_images"


def image_extension(data: bytes) -> str:
    """The file extension of encoded image bytes, from their magic bytes (``jpg`` when unknown)."""
    head = data[:16]
    for prefix, ext in ((b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"), (b"II*\x00", "tif"),
                        (b"MM\x00*", "tif")):
        if head.startswith(prefix):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return "jpg"


def shrink(data: bytes, max_side: int) -> tuple[bytes, tuple[int, int]]:
    """Re-encode an image so that its longer side is ``max_side`` (aspect kept, JPEG quality 95)."""
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    im = im.convert("RGB") if im.mode not in ("RGB", "L") else im
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    return buf.getvalue(), im.size


class ImageKeeper:
    """Writes one unit's downloaded images; :meth:`commit` before the pair shard commits."""

    def __init__(self, images_url: str, index: int, storage_options: dict[str, Any] | None = None, *,
                 max_side: int | None = None) -> None:
        self.fs, root = url_to_fs(images_url, **(storage_options or {}))
        self.root = root.rstrip("/")
        self.stem = f"{self.root}/{index:05d}"
        self.fs.makedirs(self.root, exist_ok=True)
        for stale in (f"{self.stem}_stats.json", f"{self.stem}.tar", f"{self.stem}.parquet"):
            if self.fs.exists(stale):
                self.fs.rm(stale)
        self._target = AtomicFile(f"{self.stem}.tar", fs=self.fs)
        self._tar = wds.TarWriter(self._target.file, encoder=False, mtime=1.0)
        self.rows: list[dict[str, Any]] = []
        self.max_side = max_side
        self._closed = False

    def add(self, record: ImageRecord) -> None:
        """Keep one record's image (records without bytes are left out)."""
        if record.image_bytes is None:
            return
        data = record.image_bytes
        try:
            width, height = original = Image.open(io.BytesIO(data)).size  # header only
            if self.max_side and max(original) > self.max_side:
                data, (width, height) = shrink(data, self.max_side)
        except Exception:  # noqa: BLE001 - decoding counts it later; the bytes are kept as they came
            width = height = original = None
        caption = record.captions[0] if record.captions else ""
        info = {"key": record.key, "url": record.source_url, "caption": caption, "captions": record.captions,
                "image_id": record.image_id, "status": "success", "error_message": None, "width": width,
                "height": height, "original_width": original and original[0],
                "original_height": original and original[1],
                "extra": record.meta.get("extra")}
        self._tar.write({"__key__": record.key, image_extension(data): data,
                         "txt": caption.encode("utf-8"), "json": json.dumps(info).encode("utf-8")})
        self.rows.append({k: info[k] for k in ("key", "url", "caption", "status", "error_message", "width",
                                                "height")})

    def commit(self, skipped: Counter, seconds: float) -> None:
        """Close and rename the tar, then write the parquet and the stats (img2dataset's names)."""
        self._closed = True
        self._tar.close()
        self._target.commit()
        table = pa.Table.from_pylist(self.rows, schema=pa.schema([
            ("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("status", pa.string()),
            ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64())]))
        buf = io.BytesIO()
        pq.write_table(table, buf)
        write_bytes(f"{self.stem}.parquet", buf.getvalue(), fs=self.fs)
        summary = download_summary(len(self.rows), dict(skipped))
        stats = {"count": summary["attempted"], "successes": len(self.rows),
                 "failed_to_download": sum(summary["failed"].values()), "failed_to_resize": 0,
                 "duration": seconds, "status_dict": {"success": len(self.rows), **summary["failed"]}}
        write_bytes(f"{self.stem}_stats.json", json.dumps(stats, indent=1).encode(), fs=self.fs)

    def abort(self) -> None:
        """Drop the partial tar (a no-op after :meth:`commit`)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._tar.close()
        finally:
            self._target.abort()
