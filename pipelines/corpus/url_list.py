"""URL-list reader (``corpus.format=urls``): image URLs and captions in parquet / CSV / TSV / JSONL
files (CC3M, CC12M, COYO, LAION, DataComp pools); the images are downloaded while the unit is read.

Planning (on the driver, once, never a whole file in memory): files sorted by URL; parquet row
counts come from the footers, CSV / TSV / JSONL files are streamed once to find the byte offset of
every ``images_per_unit``-th row (CSV quote-aware: a quoted caption may hold newlines; blank lines
are not rows). A unit is ``WorkUnit(source=file, start, stop)`` rows, plus ``byte_range`` for text
files, so reading a unit touches only its row groups or its bytes.

Rows (see :class:`~pipelines.corpus.base.CorpusConfig`): ``url_column`` (the image to download),
``caption_column`` (``str`` or ``list[str]``), optional ``key_column`` (the sample key, else
``<file stem>_<row:09d>``), ``id_column`` (image id, else the row number) and ``extra_columns``
(into ``meta["extra"]``). CSV / TSV files name their columns in a header line, or in
``corpus.list_columns`` when they have none (CC3M's TSV: ``[caption, url]``). One row is one image.

Downloads run ``corpus.download_threads`` at a time per reader, up to ``max(2 × threads, 64)`` rows
ahead of the consumer (more than a mining batch, so the next batch downloads while the current one
is decoded and proposed); records come out in row order, so a unit's shard does not depend on which image
arrived first. Reading happens in the mining CPU stage's prefetch thread, so the next batches
download while the current one is on the model.

Skip reasons: every reason of :data:`pipelines.corpus.fetch.DOWNLOAD_FAILURES`, ``missing_url`` (a
row without a URL), ``bad_row`` (a JSONL line that is not a JSON object, a CSV / TSV row with too
few fields), ``missing_shard`` (a planned file absent when read), ``corrupt_parquet`` and the
caption reasons of :func:`pipelines.records.clean_caption`.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
import threading
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.corpus.base import CorpusConfig, open_input, register_reader
from pipelines.corpus.fetch import DOWNLOAD_FAILURES, FetchPolicy, Fetcher
from pipelines.records import ImageRecord, SkipSample, WorkUnit, clean_captions, sanitize_key
from pipelines.storage.urls import expand_urls

logger = logging.getLogger(__name__)

__all__ = ["UrlListReader", "LIST_SUFFIXES", "DOWNLOAD_FAILURES", "list_kind"]

LIST_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".jsonl", ".ndjson")
_SCAN_CHUNK = 1 << 20
_BATCH_ROWS = 256
_MIN_AHEAD = 64  # rows downloaded ahead of the consumer at least: more than a batch, so downloads go on while it proposes
Row = dict[str, Any]


def list_kind(url: str) -> str:
    """``parquet`` | ``csv`` | ``tsv`` | ``jsonl`` from the file name; ValueError otherwise."""
    name = url.lower()
    for kind, suffixes in (("parquet", (".parquet", ".pq")), ("csv", (".csv",)), ("tsv", (".tsv",)),
                           ("jsonl", (".jsonl", ".ndjson"))):
        if name.endswith(suffixes):
            return kind
    raise ValueError(f"{url}: a URL list must end in one of {LIST_SUFFIXES} (compressed text lists "
                     f"cannot be cut into units: decompress them or convert them to parquet)")


@register_reader("urls")
class UrlListReader:
    """Reads URL + caption rows and downloads the images (see the module docstring)."""

    def __init__(self, cfg: CorpusConfig) -> None:
        if cfg.images_per_unit < 1:
            raise ValueError(f"images_per_unit must be >= 1, got {cfg.images_per_unit}")
        if cfg.download_threads < 1:
            raise ValueError(f"download_threads must be >= 1, got {cfg.download_threads}")
        if not cfg.url_column:
            raise ValueError("corpus.url_column must name the column of image URLs")
        self.cfg = cfg
        self.policy = FetchPolicy(
            connect_timeout=cfg.download_connect_timeout, read_timeout=cfg.download_read_timeout,
            total_timeout=cfg.download_total_timeout, retries=cfg.download_retries,
            backoff=cfg.download_backoff, max_bytes=cfg.download_max_bytes,
            max_redirects=cfg.download_max_redirects, opt_out=cfg.download_opt_out,
        )
        if cfg.download_user_agent:
            self.policy.user_agent = cfg.download_user_agent
        self._lock = threading.Lock()
        self._fetcher: Optional[Fetcher] = None
        self._pool: Optional[ThreadPoolExecutor] = None

    # ------------------------------------------------------------------ planning

    def plan_units(self) -> list[WorkUnit]:
        """Row ranges of ``images_per_unit`` rows per file, files sorted by URL."""
        urls = expand_urls(self.cfg.url, LIST_SUFFIXES, self.cfg.storage_options)
        units: list[WorkUnit] = []
        rows = 0
        for url in urls:
            kind = list_kind(url)
            try:
                cuts = self._parquet_cuts(url) if kind == "parquet" else self._text_cuts(url, kind)
            except FileNotFoundError:
                logger.warning("missing URL list %s", url)
                units.append(WorkUnit(len(units), url, 0, 0))  # reading it counts missing_shard
                continue
            except pa.ArrowException as e:
                logger.warning("cannot read the footer of %s: %s", url, e)
                units.append(WorkUnit(len(units), url))  # reading it counts corrupt_parquet
                continue
            for start, stop, byte_range in cuts:
                units.append(WorkUnit(len(units), url, start, stop, byte_range))
                rows += stop - start
        logger.info("%d URL lists, %d rows, %d units", len(urls), rows, len(units))
        return units

    def _parquet_cuts(self, url: str) -> list[tuple[int, int, None]]:
        with fsspec.open(url, "rb", **self.cfg.storage_options) as f:
            pf = pq.ParquetFile(f)
            self._check_columns(url, pf.schema_arrow.names)
            n = pf.metadata.num_rows
        step = self.cfg.images_per_unit
        return [(start, min(start + step, n), None) for start in range(0, n, step)]

    def _text_cuts(self, url: str, kind: str) -> list[tuple[int, int, tuple[int, int]]]:
        """Stream the file once: ``(first row, stop row, (first byte, stop byte))`` per unit."""
        step, quoted = self.cfg.images_per_unit, kind == "csv"
        cuts: list[tuple[int, int, tuple[int, int]]] = []
        header = kind in ("csv", "tsv") and self.cfg.list_columns is None
        if kind in ("csv", "tsv") and not header:
            self._check_columns(url, list(self.cfg.list_columns or []))
        row, unit_row, unit_byte, pos, record_start = 0, 0, None, 0, 0
        in_quote = False
        with fsspec.open(url, "rb", **self.cfg.storage_options) as f:
            for line in _lines(f):
                if not in_quote:
                    record_start = pos
                pos += len(line)
                if quoted and line.count(b'"') % 2:
                    in_quote = not in_quote
                if in_quote:
                    continue  # the record goes on on the next line
                if header:
                    header = False
                    self._check_columns(url, _header_names(line, kind))
                    continue
                if record_start == pos - len(line) and not line.strip():
                    continue  # a blank line is no row
                if unit_byte is None:
                    unit_byte = record_start
                row += 1
                if row - unit_row == step:
                    cuts.append((unit_row, row, (unit_byte, pos)))
                    unit_row, unit_byte = row, None
        if row > unit_row:
            cuts.append((unit_row, row, (unit_byte, pos)))
        return cuts

    def _check_columns(self, url: str, names: list[str]) -> None:
        cfg = self.cfg
        required = [cfg.url_column, cfg.caption_column, cfg.key_column, cfg.id_column, *cfg.extra_columns]
        missing = [c for c in required if c and c not in names]
        if missing:
            raise ValueError(f"{url}: column(s) {missing} not in {names}")

    # ------------------------------------------------------------------ reading

    def read_unit(self, unit: WorkUnit, skips: Counter) -> Iterator[ImageRecord]:
        """Records of the unit's rows whose image downloaded; the rest are counted in ``skips``."""
        fetcher, pool = self._downloader()
        window: deque[tuple[Any, Future]] = deque()
        ahead = max(2 * self.cfg.download_threads, _MIN_AHEAD)
        try:
            for row_index, row in self._rows(unit, skips):
                parts = self._parse(row_index, row, source=unit.source, skips=skips)
                if parts is None:
                    continue
                window.append((parts, pool.submit(fetcher.fetch, parts[2])))
                while len(window) >= ahead:
                    record = self._finish(*window.popleft(), skips)
                    if record is not None:
                        yield record
            while window:
                record = self._finish(*window.popleft(), skips)
                if record is not None:
                    yield record
        finally:
            for _, future in window:  # the consumer stopped early: drop what has not started
                future.cancel()

    def _downloader(self) -> tuple[Fetcher, ThreadPoolExecutor]:
        with self._lock:
            if self._fetcher is None:
                self._fetcher = Fetcher(self.policy, max_connections=self.cfg.download_threads)
                self._pool = ThreadPoolExecutor(self.cfg.download_threads, thread_name_prefix="download")
        return self._fetcher, self._pool

    def close(self) -> None:
        """Stop the download threads (a new read starts them again)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._fetcher = None

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles readers with configs: no threads or sockets
        return {"cfg": self.cfg, "policy": self.policy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cfg, self.policy = state["cfg"], state["policy"]
        self._lock, self._fetcher, self._pool = threading.Lock(), None, None

    def _finish(self, parts: tuple, future: Future, skips: Counter) -> Optional[ImageRecord]:
        key, captions, url, image_id, meta = parts
        try:
            data = future.result()
        except SkipSample as skip:
            logger.debug("download skipped (%s): %s", skip.reason, skip.detail)
            skips[skip.reason] += 1
            return None
        return ImageRecord(key=key, captions=captions, image_bytes=data, image_id=image_id, source_url=url,
                           meta=meta)

    def _parse(self, row_index: int, row: Row, *, source: str, skips: Counter) -> Optional[tuple]:
        """``(key, captions, url, image_id, meta)`` of one row, or None (counted)."""
        cfg = self.cfg
        url = row.get(cfg.url_column)
        if not isinstance(url, str) or not url.strip():
            skips["missing_url"] += 1
            return None
        raw = row.get(cfg.caption_column)
        captions = clean_captions(raw if isinstance(raw, list) else [raw], cfg.max_caption_chars, skips)
        file_name = posixpath.basename(source)
        key_value = row.get(cfg.key_column) if cfg.key_column else None
        key = (sanitize_key(str(key_value)) if key_value not in (None, "")
               else f"{sanitize_key(file_name.split('.')[0])}_{row_index:09d}")
        id_value = row.get(cfg.id_column) if cfg.id_column else None
        meta: dict[str, Any] = {"file": file_name, "row": row_index}
        if cfg.extra_columns:
            meta["extra"] = {c: _plain(row.get(c)) for c in cfg.extra_columns}
        return key, captions, url.strip(), id_value if id_value not in (None, "") else row_index, meta

    def _rows(self, unit: WorkUnit, skips: Counter) -> Iterator[tuple[int, Row]]:
        """``(row number, {column: value})`` of rows ``start:stop`` of the unit's file."""
        kind = list_kind(unit.source)
        f = open_input(unit.source, self.cfg.storage_options, skips)
        if f is None:
            return
        with f:
            if kind == "parquet":
                yield from self._parquet_rows(f, unit, skips)
            else:
                yield from self._text_rows(f, unit, kind=kind, skips=skips)

    def _parquet_rows(self, f: Any, unit: WorkUnit, skips: Counter) -> Iterator[tuple[int, Row]]:
        cfg = self.cfg
        stop = unit.stop if unit.stop is not None else None
        try:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            wanted = [cfg.url_column, cfg.caption_column, cfg.key_column, cfg.id_column, *cfg.extra_columns]
            columns = [c for c in dict.fromkeys(wanted) if c and c in names]
            stop = pf.metadata.num_rows if stop is None else stop
            first = 0
            for rg in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                if first + n <= unit.start or first >= stop:
                    first += n
                    continue
                for batch in pf.iter_batches(_BATCH_ROWS, row_groups=[rg], columns=columns):
                    lo, hi = max(0, unit.start - first), min(batch.num_rows, stop - first)
                    for j, row in enumerate(batch.slice(lo, max(0, hi - lo)).to_pylist()):
                        yield first + lo + j, row
                    first += batch.num_rows
                    if first >= stop:
                        return
        except pa.ArrowException as e:  # bad data; plain I/O errors propagate (retry)
            logger.warning("corrupt_parquet %s: %s", unit.source, e)
            skips["corrupt_parquet"] += 1

    def _text_rows(self, f: Any, unit: WorkUnit, *, kind: str, skips: Counter) -> Iterator[tuple[int, Row]]:
        names = self.cfg.list_columns
        if kind in ("csv", "tsv") and names is None:
            names = _header_names(_first_record(f, quoted=kind == "csv"), kind)
        lo, hi = unit.byte_range if unit.byte_range is not None else (0, None)
        f.seek(lo)
        data = f.read(None if hi is None else hi - lo)
        text = data.decode("utf-8", errors="replace")
        if kind == "jsonl":
            records: Iterator[Any] = (line for line in text.split("\n") if line.strip())
        elif kind == "csv":
            records = (r for r in csv.reader(io.StringIO(text, newline="")) if any(v.strip() for v in r))
        else:
            records = (line.rstrip("\r").split("\t") for line in text.split("\n") if line.strip())
        for i, item in enumerate(records):
            row_index = unit.start + i
            if unit.stop is not None and row_index >= unit.stop:
                break
            row = _to_row(item, names, kind)
            if row is None:
                skips["bad_row"] += 1
                continue
            yield row_index, row


def _lines(f: Any) -> Iterator[bytes]:
    """Lines of a binary file object, ``\\n`` kept, read in 1 MiB chunks."""
    rest = b""
    while chunk := f.read(_SCAN_CHUNK):
        chunk = rest + chunk
        lines = chunk.split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def _first_record(f: Any, *, quoted: bool) -> bytes:
    """The header record at the start of ``f`` (CSV quote-aware)."""
    f.seek(0)
    out, in_quote = b"", False
    for line in _lines(f):
        out += line
        if quoted and line.count(b'"') % 2:
            in_quote = not in_quote
        if not in_quote:
            break
    return out


def _header_names(line: bytes, kind: str) -> list[str]:
    text = line.decode("utf-8-sig", errors="replace").strip("\r\n")
    if kind == "csv":
        return next(csv.reader(io.StringIO(text)), [])
    return text.split("\t")


def _to_row(item: Any, names: Optional[list[str]], kind: str) -> Optional[Row]:
    if kind == "jsonl":
        try:
            row = json.loads(item)
        except ValueError:
            return None
        return row if isinstance(row, dict) else None
    fields = item
    if names is None or len(fields) < len(names):
        return None
    return dict(zip(names, fields))


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a column value (pair metadata is JSON)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
