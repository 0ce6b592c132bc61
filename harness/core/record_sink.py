"""Streaming per-query records to a directory of parquet parts, readable at any moment.

With a path, the records "file" is a directory: ``PATH/part-00000000.parquet``, ``part-00000001.parquet``, ... Each
part is a complete parquet file, written under a temporary name starting with a dot (``.part-...tmp``, which
pyarrow's dataset discovery skips) in the same directory and then ``os.replace``d into place, so a reader never sees a
half-written part. ``pd.read_parquet(PATH)`` reads the directory as one table, parts in order, with the schema's
columns and dtypes (every part is conformed to the schema; part 0, written when the sink opens, is empty and carries
the columns, so a directory with no rows yet still reads as the schema).

Rows are written when ``flush_rows`` rows are waiting, or on an append once ``flush_interval_s`` has passed since the
last write, and whenever ``flush()`` is called: an owner whose rows may stop coming calls ``flush()`` on a timer
(the dispatcher does, every ``flush_interval_s``), so a kill -9 loses at most about the last interval's rows. Parts
are not fsynced: they survive the death of the process, not of the machine. ``close()`` flushes and keeps the
directory as it is (no compaction: about one small part per second, or one per ``flush_rows`` rows under heavy load,
is fine for pyarrow; pyarrow reads the parts in name order, which is write order).

A failed write leaves its rows buffered and raises once; the next flush tries again. Text that is not valid UTF-8 (a
str with lone surrogates, as aiohttp makes of non-UTF-8 header bytes) is escaped (``errors="backslashreplace"``) in
the buffered rows rather than failing the write.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.core.records import conform

PART_DIGITS = 8  # lexical order is numeric order for 10**8 parts (three years at one part per second)
PART_GLOB = "part-*.parquet"


def part_name(index: int) -> str:
    """The file name of part ``index``."""
    return f"part-{index:0{PART_DIGITS}d}.parquet"


def utf8_safe(rows: list[dict]) -> None:
    """Make every text value of ``rows`` encodable as UTF-8, in place (lone surrogates, e.g. from non-UTF-8 header
    bytes, become ``\\udcff`` escapes: distinct ids stay distinct, unlike with ``errors="replace"``)."""
    for row in rows:
        for key, value in row.items():
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    row[key] = value.encode("utf-8", "backslashreplace").decode("utf-8")


class RecordSink:
    """Append dict rows of one record schema; with a path, stream them to a directory of parquet parts. ``rows``
    holds the most recent ``memory_rows`` (all of them without a path), so a long-running dispatcher's memory stays
    bounded. Opening a sink on a path replaces what an earlier sink left there."""

    def __init__(
        self,
        path: str | Path | None,
        schema: dict[str, str],
        flush_rows: int = 2000,
        memory_rows: int = 200_000,
        flush_interval_s: float = 1.0,
        flush_on_append: bool = True,
    ):
        self.path = Path(path) if path else None
        self.schema = schema
        self.flush_rows = flush_rows
        self.memory_rows = memory_rows
        self.flush_interval_s = flush_interval_s
        # False: only flush() writes, from whichever thread the owner chooses (the dispatcher writes from a worker
        # thread, so its event loop never stalls for the ~15 ms a part costs).
        self.flush_on_append = flush_on_append
        self._lock = threading.Lock()  # the buffer and its counters, between the appending and the writing thread
        self._write_lock = threading.Lock()  # one part at a time
        self.rows: list[dict] = []
        self.total = 0
        self._unflushed = 0
        self._parts = 0
        self._last_flush = time.monotonic()
        self._failed = False
        self._arrow: pa.Schema | None = None
        if self.path:
            self._open()

    def __len__(self) -> int:
        return self.total

    def append(self, row: dict) -> None:
        """Add one row (writes a part when ``flush_rows`` rows are waiting or ``flush_interval_s`` has passed; after
        a failed write, not again before ``flush_interval_s`` has passed)."""
        with self._lock:
            self.rows.append(row)
            self.total += 1
            self._unflushed += 1
        if self.path and self.flush_on_append:
            since = time.monotonic() - self._last_flush
            if since >= self.flush_interval_s or (self._unflushed >= self.flush_rows and not self._failed):
                self.flush()

    def extend(self, rows: list[dict]) -> None:
        """Add many rows and write them at once as one part."""
        with self._lock:
            self.rows.extend(rows)
            self.total += len(rows)
            self._unflushed += len(rows)
        self.flush()

    def frame(self) -> pd.DataFrame:
        """The rows held in memory as a DataFrame of the schema."""
        with self._lock:
            rows = list(self.rows)
        return self._conform(rows)

    def flush(self) -> None:
        """Write the rows not yet written as one part. If the write raises, the rows stay buffered and the error
        propagates; the next flush tries again."""
        if not self.path:
            return
        with self._write_lock:
            with self._lock:  # the unwritten rows are the newest ones; rows appended from now on wait for the next
                n = self._unflushed
                pending = self.rows[len(self.rows) - n :]
            if not n:
                return
            self._last_flush = time.monotonic()
            self._failed = True
            self._write_part(self._table(pending))
            self._failed = False
            with self._lock:
                self._unflushed -= n
                if len(self.rows) > self.memory_rows:  # everything written may go; keep the recent tail for lookups
                    del self.rows[: len(self.rows) - max(self.memory_rows, self._unflushed)]

    def close(self) -> None:
        """Flush; the directory stays as it is (part 0 gives a sink without rows the schema's columns)."""
        self.flush()

    # -- internals --------------------------------------------------------------------------------------------------
    def _conform(self, rows: list[dict]) -> pd.DataFrame:
        try:
            return conform(pd.DataFrame(rows), self.schema)
        except UnicodeEncodeError:  # pandas' str dtype rejects text that is not valid UTF-8: escape it, once
            utf8_safe(rows)
            return conform(pd.DataFrame(rows), self.schema)

    def _table(self, rows: list[dict]) -> pa.Table:
        """The rows as an Arrow table of the schema: straight from the dicts when they already hold the schema's
        types (about 30 times cheaper than through pandas), else conformed through pandas."""
        try:
            return pa.Table.from_pylist(rows, schema=self._arrow)
        except (pa.ArrowException, TypeError, ValueError, UnicodeError):
            return pa.Table.from_pandas(self._conform(rows), schema=self._arrow, preserve_index=False, safe=False)

    def _open(self) -> None:
        """Replace what was at the path (an older single file, or parts of an earlier run) by an empty part 0."""
        assert self.path is not None
        if self.path.is_dir():
            for old in [*self.path.glob(PART_GLOB), *self.path.glob(".part-*.tmp")]:
                old.unlink()
        elif self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        empty = conform(pd.DataFrame(), self.schema)
        self._arrow = pa.Schema.from_pandas(empty, preserve_index=False)
        self._write_part(pa.Table.from_pandas(empty, schema=self._arrow, preserve_index=False))

    def _write_part(self, table: pa.Table) -> None:
        """Write ``table`` as the next part: complete under a dot-name, then renamed into place."""
        assert self.path is not None
        final = self.path / part_name(self._parts)
        tmp = self.path / f".{final.name}.{os.getpid()}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._parts += 1
