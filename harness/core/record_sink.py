"""Streaming per-query records to parquet: rows buffered in memory, written as row groups, footer on close.

Rows are flushed every ``flush_rows`` rows (and whenever ``flush()`` is called), so a crash loses at most the
unflushed tail; ``close()`` writes the footer that makes the file readable.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.core.records import conform


class RecordSink:
    """Append dict rows of one record schema; with a path, stream them to parquet. ``rows`` holds the most recent
    ``memory_rows`` (all of them without a path), so a long-running dispatcher's memory stays bounded."""

    def __init__(
        self, path: str | Path | None, schema: dict[str, str], flush_rows: int = 2000, memory_rows: int = 200_000
    ):
        self.path = Path(path) if path else None
        self.schema = schema
        self.flush_rows = flush_rows
        self.memory_rows = memory_rows
        self.rows: list[dict] = []
        self.total = 0
        self._unflushed = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None

    def __len__(self) -> int:
        return self.total

    def append(self, row: dict) -> None:
        """Add one row (flushes a row group when enough rows are waiting)."""
        self.rows.append(row)
        self.total += 1
        self._unflushed += 1
        if self.path and self._unflushed >= self.flush_rows:
            self.flush()

    def extend(self, rows: list[dict]) -> None:
        """Add many rows and write them at once as one row group."""
        self.rows.extend(rows)
        self.total += len(rows)
        self._unflushed += len(rows)
        self.flush()

    def frame(self) -> pd.DataFrame:
        """The rows held in memory as a DataFrame of the schema."""
        return conform(pd.DataFrame(self.rows), self.schema)

    def flush(self) -> None:
        """Write the rows not yet written as one row group."""
        if not self.path or not self._unflushed:
            return
        chunk = conform(pd.DataFrame(self.rows[-self._unflushed :]), self.schema)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = pa.Schema.from_pandas(chunk, preserve_index=False)
            self._writer = pq.ParquetWriter(self.path, self._schema)
        table = pa.Table.from_pandas(chunk, schema=self._schema, preserve_index=False, safe=False)
        self._writer.write_table(table)
        self._unflushed = 0
        if len(self.rows) > self.memory_rows:  # everything written may go; keep the recent tail for lookups
            del self.rows[: len(self.rows) - self.memory_rows]

    def close(self) -> None:
        """Flush and write the footer; with no rows at all, write an empty file with the columns."""
        if not self.path:
            return
        if self._writer is None and not self._unflushed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conform(pd.DataFrame(), self.schema).to_parquet(self.path, index=False)
            return
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
