"""Parquet reader: image bytes (or image paths) and captions in columns, via pyarrow + fsspec.

Units are planned from parquet footers only (row counts, no data read): each file (sorted by URL)
is cut into ``WorkUnit(source=file, start, stop)`` row ranges of ``images_per_unit`` rows. A unit
reads just the row groups covering its range.

Columns (see :class:`~pipelines.corpus.base.CorpusConfig`):
    ``image_column``       encoded bytes, a struct with ``bytes`` (and ``path``, as written by
                           Hugging Face ``datasets``), or a string path
    ``image_path_column``  path relative to the parquet file's folder, absolute path, or URL
    ``caption_column``     ``str`` or ``list[str]``
    ``key_column`` / ``id_column``  rows sharing the value form one image (their captions are
                           merged). Runs of equal values that cross a unit boundary belong to the
                           unit where the run starts; equal values far apart in different units
                           are not merged. Without either, each row is one image keyed
                           ``<file stem>_<row:09d>``.
    ``url_column``         original URL (optional; ignored when the column is absent)

Skip reasons: ``missing_shard`` (file absent), ``corrupt_parquet`` (unreadable file; rows before
the damage are kept), ``missing_image`` (no bytes and no path in any row of the group) and the
caption reasons of :func:`pipelines.records.clean_caption`.
"""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.corpus.base import CorpusConfig, open_input, register_reader
from pipelines.storage.urls import expand_urls, join_url, parent_url
from pipelines.records import ImageRecord, WorkUnit, clean_captions, sanitize_key

logger = logging.getLogger(__name__)

__all__ = ["ParquetReader", "PARQUET_SUFFIXES"]

PARQUET_SUFFIXES = (".parquet", ".pq")
_BATCH_ROWS = 64
_PLAN_THREADS = 16
Row = dict[str, Any]


@register_reader("parquet")
class ParquetReader:
    """Reads image/caption rows from parquet files (local or remote, via fsspec)."""

    def __init__(self, cfg: CorpusConfig) -> None:
        if cfg.images_per_unit < 1:
            raise ValueError(f"images_per_unit must be >= 1, got {cfg.images_per_unit}")
        self.cfg = cfg
        self.group_column = cfg.key_column or cfg.id_column

    # ------------------------------------------------------------------ planning

    def plan_units(self) -> list[WorkUnit]:
        """Row ranges of ``images_per_unit`` rows per file, files sorted by URL, from footers."""
        urls = expand_urls(self.cfg.url, PARQUET_SUFFIXES, self.cfg.storage_options)
        with ThreadPoolExecutor(max_workers=min(_PLAN_THREADS, max(1, len(urls)))) as pool:
            row_counts = list(pool.map(self._num_rows, urls))
        units: list[WorkUnit] = []
        step = self.cfg.images_per_unit
        for url, n in zip(urls, row_counts):
            if n is None:  # unreadable footer: one unit, so that reading it counts the damage
                units.append(WorkUnit(len(units), url))
            for start in range(0, n or 0, step):
                units.append(WorkUnit(len(units), url, start, min(start + step, n)))
        rows = sum(n or 0 for n in row_counts)
        logger.info("%d parquet files, %d rows, %d units", len(urls), rows, len(units))
        return units

    def _num_rows(self, url: str) -> Optional[int]:
        """Row count from the footer (None when unreadable); checks the configured columns."""
        try:
            with fsspec.open(url, "rb", **self.cfg.storage_options) as f:
                pf = pq.ParquetFile(f)
                names, n = pf.schema_arrow.names, pf.metadata.num_rows
        except (FileNotFoundError, pa.ArrowException) as e:
            logger.warning("cannot read the footer of %s: %s", url, e)
            return None
        self._check_columns(url, names)
        return n

    def _check_columns(self, url: str, names: list[str]) -> None:
        cfg = self.cfg
        required = [cfg.caption_column] + [c for c in (cfg.key_column, cfg.id_column) if c]
        missing = [c for c in required if c not in names]
        if cfg.image_column not in names and (cfg.image_path_column or "") not in names:
            missing.append(cfg.image_path_column or cfg.image_column)
        if missing:
            raise ValueError(f"{url}: column(s) {missing} not in {names}")

    # ------------------------------------------------------------------ reading

    def read_unit(self, unit: WorkUnit, skips: Counter) -> Iterator[ImageRecord]:
        """Records of rows ``start:stop`` of one file (grouped by key/id when configured)."""
        f = open_input(unit.source, self.cfg.storage_options, skips)
        if f is None:
            return
        with f:
            groups = self._read_groups(f, unit, skips)
            for rows in groups:
                record = self._to_record(rows, unit.source, skips)
                if record is not None:
                    yield record

    def _read_groups(self, f: Any, unit: WorkUnit, skips: Counter) -> list[list[tuple[int, Row]]]:
        """Rows of the unit grouped by key/id value, in order of first appearance."""
        group_col = self.group_column
        groups: dict[Any, list[tuple[int, Row]]] = {}
        prev: Any = None  # group value of row start-1 (its run belongs to the previous unit)
        last: Any = None  # group value of the last row taken inside the range
        leading = True
        try:
            pf = pq.ParquetFile(f)
            stop = pf.metadata.num_rows if unit.stop is None else unit.stop
            lo = unit.start - 1 if (group_col and unit.start > 0) else unit.start
            for i, row in self._iter_rows(pf, lo):
                value = row.get(group_col) if group_col else None
                if i < unit.start:
                    prev = value
                    continue
                if i >= stop:  # finish the run that crosses the end of the range
                    if value is None or value != last:
                        break
                    groups[value].append((i, row))
                    continue
                if leading and value is not None and value == prev:
                    continue  # continuation of the previous unit's run
                leading = False
                last = value
                groups.setdefault(("row", i) if value is None else value, []).append((i, row))
        except pa.ArrowException as e:  # bad data; plain I/O errors propagate (retry)
            logger.warning("corrupt_parquet %s after %d groups: %s", unit.source, len(groups), e)
            skips["corrupt_parquet"] += 1
        return list(groups.values())

    def _iter_rows(self, pf: pq.ParquetFile, lo: int) -> Iterator[tuple[int, Row]]:
        """``(row_index, {column: value})`` from row ``lo`` to the end of the file, lazily."""
        names = pf.schema_arrow.names
        cfg = self.cfg
        wanted = [
            cfg.image_column, cfg.image_path_column, cfg.caption_column,
            cfg.key_column, cfg.id_column, cfg.url_column,
        ]  # fmt: skip
        columns = [c for c in dict.fromkeys(wanted) if c and c in names]
        first_row = 0
        for rg in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            if first_row + n <= lo:
                first_row += n
                continue
            for batch in pf.iter_batches(_BATCH_ROWS, row_groups=[rg], columns=columns):
                skip = max(0, lo - first_row)
                for j, row in enumerate(batch.slice(skip).to_pylist()):
                    yield first_row + skip + j, row
                first_row += batch.num_rows

    def _to_record(
        self, rows: list[tuple[int, Row]], source: str, skips: Counter
    ) -> Optional[ImageRecord]:
        cfg = self.cfg
        folder, file_name = parent_url(source), posixpath.basename(source)
        first_index, first = rows[0]
        image_bytes: Optional[bytes] = None
        image_url: Optional[str] = None
        for _, row in rows:
            image_bytes, image_url = self._image_of(row, folder)
            if image_bytes is not None or image_url is not None:
                break
        else:
            skips["missing_image"] += 1
            return None
        raws: list[Any] = []
        for _, row in rows:
            value = row.get(cfg.caption_column)
            raws.extend(value if isinstance(value, list) else [value])
        group_value = first.get(self.group_column) if self.group_column else None
        id_value = first.get(cfg.id_column) if cfg.id_column else group_value
        source_url = first.get(cfg.url_column) if cfg.url_column else None
        return ImageRecord(
            key=(
                sanitize_key(str(group_value))
                if group_value is not None
                else f"{sanitize_key(file_name.split('.')[0])}_{first_index:09d}"
            ),
            captions=clean_captions(raws, cfg.max_caption_chars, skips),
            image_bytes=image_bytes,
            image_url=image_url,
            image_id=id_value if id_value is not None else first_index,
            source_url=source_url if isinstance(source_url, str) else None,
            meta={"file": file_name, "row": first_index},
        )

    def _image_of(self, row: Row, folder: str) -> tuple[Optional[bytes], Optional[str]]:
        """``(bytes, None)``, ``(None, url)`` or ``(None, None)`` for one row."""
        value = row.get(self.cfg.image_column)
        path: Any = None
        if isinstance(value, dict):  # {"bytes": ..., "path": ...}
            value, path = value.get("bytes"), value.get("path")
        if isinstance(value, (bytes, bytearray)):  # b"" is kept: decoding counts zero_byte
            return bytes(value), None
        if isinstance(value, str) and value:
            path = value
        if self.cfg.image_path_column and row.get(self.cfg.image_path_column):
            path = row[self.cfg.image_path_column]
        if isinstance(path, str) and path:
            return None, join_url(folder, path)
        return None, None
