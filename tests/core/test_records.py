"""The record schema and the streaming record sink."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.core import record_sink
from harness.core.record_sink import RecordSink, part_name
from harness.core.records import (
    DISPATCHER_SCHEMA,
    INT,
    QUERY_COLUMNS,
    QUERY_SCHEMA,
    RECORD_COLUMNS,
    conform,
    empty_row,
    latency_ms,
)


def test_every_schema_extends_the_base_record():
    assert QUERY_COLUMNS[: len(RECORD_COLUMNS)] == RECORD_COLUMNS
    assert tuple(DISPATCHER_SCHEMA)[: len(RECORD_COLUMNS)] == RECORD_COLUMNS


def test_conform_gives_columns_order_and_dtypes():
    frame = conform(
        pd.DataFrame({"status": ["ok", None], "batch_size": ["10", None], "extra": [1, 2], "arrival_s": [1, 2]}),
        QUERY_SCHEMA,
    )
    assert list(frame.columns) == list(QUERY_COLUMNS)
    assert frame["batch_size"].tolist() == [10, 0] and frame["batch_size"].dtype == np.int64
    assert frame["status"].tolist() == ["ok", ""] and frame["arrival_s"].dtype == float
    assert frame["finish_s"].isna().all() and frame["request_id"].tolist() == ["", ""]
    row = empty_row(DISPATCHER_SCHEMA)
    assert row["attempts"] == 0 and row["error"] == "" and np.isnan(row["queue_ms"])


def test_latency_is_infinite_unless_served():
    frame = pd.DataFrame(
        {"arrival_s": [1.0, 1.0, 1.0], "finish_s": [1.25, 2.0, np.nan], "status": ["ok", "shed", "ok"]}
    )
    assert latency_ms(frame).tolist() == [250.0, np.inf, np.inf]


def test_record_sink_bounds_memory_but_writes_everything(tmp_path):
    sink = RecordSink(tmp_path / "r.parquet", {"i": INT}, flush_rows=10, memory_rows=25)
    for i in range(100):
        sink.append({"i": i})
    sink.close()
    assert len(sink) == 100 and len(sink.rows) <= 35 and sink.rows[-1]["i"] == 99
    assert pd.read_parquet(tmp_path / "r.parquet")["i"].tolist() == list(range(100))


# ---------------------------------------------------------------- the sink's directory of parts


def _rows(n: int, start: int = 0) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        row = empty_row(DISPATCHER_SCHEMA)
        row.update(request_id=f"q-{i}", model="m", batch_size=i, arrival_s=float(i), status="ok", http_status=200)
        rows.append(row)
    return rows


def test_record_sink_writes_a_directory_of_parts_readable_at_any_moment(tmp_path):
    path = tmp_path / "r.parquet"
    sink = RecordSink(path, DISPATCHER_SCHEMA, flush_rows=10, flush_interval_s=60.0)
    empty = pd.read_parquet(path)  # readable before the first row: the schema's columns, no rows
    assert list(empty.columns) == list(DISPATCHER_SCHEMA) and len(empty) == 0
    for row in _rows(25):
        sink.append(row)
    assert path.is_dir() and sorted(p.name for p in path.iterdir()) == [part_name(i) for i in range(3)]
    (path / ".part-00000009.parquet.1.tmp").write_bytes(b"half a part")  # what a kill during a write leaves
    mid = pd.read_parquet(path)  # not closed: the two full parts are there
    assert mid["request_id"].tolist() == [f"q-{i}" for i in range(20)]
    sink.close()
    out = pd.read_parquet(path)
    assert list(out.columns) == list(DISPATCHER_SCHEMA)
    assert out.dtypes.equals(sink.frame().dtypes)  # str, int64, float64 as the schema says
    assert out["batch_size"].tolist() == list(range(25)) and out["http_status"].dtype == np.int64


def test_record_sink_without_rows_leaves_the_columns_and_replaces_an_old_file(tmp_path):
    path = tmp_path / "r.parquet"
    pd.DataFrame({"old": [1]}).to_parquet(path)  # an older single-file layout at the same path
    RecordSink(path, DISPATCHER_SCHEMA).close()
    out = pd.read_parquet(path)
    assert list(out.columns) == list(DISPATCHER_SCHEMA) and len(out) == 0
    sink = RecordSink(path, DISPATCHER_SCHEMA)  # a second run on the same path starts from nothing
    sink.extend(_rows(3))
    sink.close()
    assert pd.read_parquet(path)["request_id"].tolist() == ["q-0", "q-1", "q-2"]


def test_record_sink_flushes_on_time(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(record_sink.time, "monotonic", lambda: clock[0])
    path = tmp_path / "r.parquet"
    sink = RecordSink(path, DISPATCHER_SCHEMA, flush_rows=1000, flush_interval_s=1.0)
    sink.append(_rows(1)[0])
    assert len(pd.read_parquet(path)) == 0  # not yet due
    clock[0] += 1.0
    sink.append(_rows(1, 1)[0])  # a second passed: this append writes both
    assert pd.read_parquet(path)["request_id"].tolist() == ["q-0", "q-1"]


def test_record_sink_recovers_from_a_failed_flush(tmp_path, monkeypatch):
    path = tmp_path / "r.parquet"
    sink = RecordSink(path, DISPATCHER_SCHEMA, flush_rows=10, flush_interval_s=60.0)
    real = record_sink.pq.write_table
    calls = []

    def fail_once(table, where, **kw):
        calls.append(where)
        if len(calls) == 1:
            Path(where).write_bytes(b"half")  # the failure leaves a partial temp file behind
            raise OSError(28, "No space left on device")
        return real(table, where, **kw)

    monkeypatch.setattr(record_sink.pq, "write_table", fail_once)
    rows = _rows(30)
    for row in rows[:9]:
        sink.append(row)
    with pytest.raises(OSError, match="No space"):
        sink.append(rows[9])  # the error reaches the caller once
    for row in rows[10:19]:
        sink.append(row)  # no retry on every append before flush_interval_s has passed
    assert len(calls) == 1 and not list(path.glob(".*"))  # and the half-written temp file is gone
    sink.flush()  # the next flush writes everything that was waiting
    for row in rows[19:]:
        sink.append(row)
    sink.close()
    assert pd.read_parquet(path)["request_id"].tolist() == [r["request_id"] for r in rows]


def test_record_sink_writes_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "r.parquet"
    sink = RecordSink(path, DISPATCHER_SCHEMA)
    bad = _rows(1)[0] | {"request_id": "\udcff-bad"}  # aiohttp's reading of a non-UTF-8 X-Request-ID byte
    sink.append(bad)
    good = _rows(5000, 1)
    for row in good:
        sink.append(row)
    sink.close()
    out = pd.read_parquet(path)
    assert out["request_id"].tolist() == ["\\udcff-bad"] + [r["request_id"] for r in good]
    assert len(sink.frame()) == 5001
