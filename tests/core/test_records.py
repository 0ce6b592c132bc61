"""The record schema and the streaming record sink."""

import numpy as np
import pandas as pd

from harness.core.record_sink import RecordSink
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
