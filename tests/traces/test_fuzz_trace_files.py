"""Fuzzing the trace reader: a bad trace file is a TraceError naming the file (and the column and row), nothing else.

``read_trace`` gets CSV and parquet traces that are valid but for one cell, parquet files whose columns have the wrong
types altogether, damaged parquet, and garbage; ``Trace.from_frame`` gets frames of mixed Python objects. The answer
is a valid ``Trace`` (every invariant of the schema holds) or an ``InputError`` naming the file, never a KeyError,
ValueError, UnicodeDecodeError or pyarrow error. A valid file reads back exactly what was written.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from harness.core.errors import InputError
from tests.core.test_fuzz_core_files import (
    FUZZ,
    GARBAGE,
    NAME,
    assert_names_the_cell,
    csv_bytes,
    damaged,
    parquet_bytes,
    read_or_input_error,
    weird_column,
)
from traces.importers import import_mooncake
from traces.io import read_trace
from traces.schema import MAX_COUNT, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, Trace

COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
# Text that is not a valid cell of each column, wherever it stands (CSV).
BAD_CELLS = {
    "arrival_s": st.sampled_from(["abc", "", "nan", "inf", "-inf", "1e400", "-1", "-0.5", "0x10", "1,5", "True"]),
    "batch_size": st.sampled_from(["0", "-3", "1.5", "1e20", "abc", "", "inf", "99999999999999999999", "True"]),
    "model": st.sampled_from(["", "NA", "null"]),
    "request_id": st.sampled_from(["", "NaN"]),
    "tokens_in": st.sampled_from(["-1", "1.5", "x", "1e30", "", "nan"]),
    "tokens_out": st.sampled_from(["-2", "0.5", "1e300", "", "-inf"]),
}


@st.composite
def trace_columns(draw) -> dict[str, list]:
    """A valid trace as Python values, with a random subset of the optional columns."""
    n = draw(st.integers(1, 12))
    cols = {
        "arrival_s": sorted(draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n))),
        "batch_size": draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n)),
        "model": draw(st.lists(NAME, min_size=n, max_size=n)),
    }
    for col in draw(st.lists(st.sampled_from(OPTIONAL_COLUMNS), unique=True)):
        values = NAME if col == "request_id" else st.integers(0, 10**9)
        cols[col] = draw(st.lists(values, min_size=n, max_size=n))
    return cols


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # repr: exact floats


def check_trace(trace: Trace) -> None:
    """Every invariant the schema promises."""
    n = len(trace)
    assert n >= 1 and len(trace.batch_size) == n and len(trace.model) == n
    assert np.isfinite(trace.arrival_s).all() and (trace.arrival_s >= 0).all() and (np.diff(trace.arrival_s) >= 0).all()
    assert (
        trace.batch_size.dtype == np.int64 and (trace.batch_size >= 1).all() and (trace.batch_size <= MAX_COUNT).all()
    )
    assert all(isinstance(m, str) and m for m in trace.model)
    for col, values in trace.extra.items():
        assert len(values) == n
        if col == "request_id":
            assert all(isinstance(r, str) and r for r in values)
        else:
            assert values.dtype == np.int64 and (values >= 0).all()


@seed(zlib.crc32(b"trace-csv"))
@settings(FUZZ, max_examples=250)
@given(cols=trace_columns(), where=st.data())
def test_a_trace_csv_reads_back_exactly_or_names_its_one_bad_cell(tmp_path_factory, cols, where):
    path = tmp_path_factory.getbasetemp() / "fuzz-trace.csv"
    names = list(cols)
    order = where.draw(st.permutations(names))
    rows = [[_text(cols[c][k]) for c in order] for k in range(len(cols["arrival_s"]))]
    broken = where.draw(st.one_of(st.none(), st.sampled_from(names)))
    if broken is None:
        path.write_bytes(csv_bytes(order, rows))
        trace = read_trace(path)
        check_trace(trace)
        assert trace.arrival_s.tolist() == cols["arrival_s"] and trace.batch_size.tolist() == cols["batch_size"]
        assert trace.model.tolist() == cols["model"]
        for col in OPTIONAL_COLUMNS:
            assert col not in cols or trace.extra[col].tolist() == cols[col]
        return
    row = where.draw(st.integers(0, len(rows) - 1))
    rows[row][order.index(broken)] = where.draw(BAD_CELLS[broken])
    path.write_bytes(csv_bytes(order, rows))
    with pytest.raises(Exception) as caught:
        read_trace(path)
    assert_names_the_cell(caught.value, path, broken, row)


@seed(zlib.crc32(b"trace-parquet"))
@settings(FUZZ, max_examples=150)
@given(cols=trace_columns(), where=st.data())
def test_a_trace_parquet_of_any_column_types_is_read_or_refused(tmp_path_factory, cols, where):
    """Columns of the wrong type, then the same file damaged: a valid trace or an InputError naming the file."""
    path = tmp_path_factory.getbasetemp() / "fuzz-trace.parquet"
    arrays = {c: pa.array(v) for c, v in cols.items()}
    for name in where.draw(st.lists(st.sampled_from(list(cols)), max_size=2, unique=True)):
        arrays[name] = where.draw(weird_column(len(cols["arrival_s"])))
    data = parquet_bytes(pa.table(arrays))
    for content in (data, where.draw(damaged(data))):
        path.write_bytes(content)
        trace = read_or_input_error(read_trace, path)
        if trace is not None:
            check_trace(trace)


@seed(zlib.crc32(b"trace-garbage"))
@settings(FUZZ, max_examples=200)
@given(content=GARBAGE, suffix=st.sampled_from([".csv", ".parquet", ".CSV"]))
def test_a_trace_file_of_garbage_is_an_input_error(tmp_path_factory, content, suffix):
    path = tmp_path_factory.getbasetemp() / f"fuzz-garbage{suffix}"
    path.write_bytes(content)
    trace = read_or_input_error(read_trace, path)
    if trace is not None:
        check_trace(trace)


CELL = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=5),
    st.binary(max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.just(pd.Timestamp(0)),
)


@seed(zlib.crc32(b"trace-frame"))
@settings(FUZZ, max_examples=200)
@given(
    frame=st.integers(1, 6).flatmap(
        lambda n: st.dictionaries(
            st.sampled_from(COLUMNS), st.lists(CELL, min_size=n, max_size=n), min_size=3, max_size=len(COLUMNS)
        )
    )
)
def test_a_frame_of_any_objects_is_a_trace_or_an_input_error_naming_its_source(frame):
    try:
        trace = Trace.from_frame(pd.DataFrame(frame, dtype=object), source="<fuzz>")
    except InputError as err:
        assert str(err).startswith("<fuzz>: "), str(err)
        return
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} instead of an InputError: {exc}") from exc
    check_trace(trace)


def _parquet(**columns) -> bytes:
    return parquet_bytes(pa.table(columns))


def _utf8_damaged() -> bytes:
    data = parquet_bytes(pa.table({"arrival_s": [0.0], "batch_size": [1], "model": ["mm"]}))
    return data.replace(b"mm", b"\xff\xfe", 1)


# What the fuzzing above found, each by the file that showed it (before: what came back instead).
FOUND = [
    ("huge-batch.csv", b"arrival_s,batch_size,model\n0,1e20,rm2\n", "row 1: 1e+20 is not an integer from 1"),  # -2**63
    ("uint64.parquet", _parquet(arrival_s=[0.0], batch_size=pa.array([2**64 - 1], pa.uint64()), model=["a"]), "row 1"),
    ("frac-tokens.csv", b"arrival_s,batch_size,model,tokens_in\n0,1,rm2,1.5\n", "1.5 is not a count"),  # 1
    ("huge-tokens.csv", b"arrival_s,batch_size,model,tokens_in\n0,1,rm2,1e30\n", "is not a count"),  # -2**63
    ("bytes-model.parquet", _parquet(arrival_s=[0.0], batch_size=[1], model=pa.array([b"\xff"])), "is not a model"),
    ("list-model.parquet", _parquet(arrival_s=[0.0], batch_size=[1], model=[["a", "b"]]), "is not a model name"),
    ("timestamps.parquet", _parquet(arrival_s=pa.array([0], pa.timestamp("s")), batch_size=[1], model=["a"]), "holds"),
    ("bools.csv", b"arrival_s,batch_size,model\nTrue,1,rm2\n", "column 'arrival_s' holds bool values"),  # 1.0 s
    ("no-id.csv", b"arrival_s,batch_size,model,request_id\n0,1,rm2,\n", "row 1: nan is not a request id"),  # NaN id
    ("bad-utf8.parquet", _utf8_damaged(), "Invalid UTF8"),  # ArrowException, from pandas, later
]


@pytest.mark.parametrize("name, content, needle", FOUND, ids=[f[0] for f in FOUND])
def test_what_fuzzing_found_is_an_input_error_naming_the_file(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_trace(path)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value), str(err.value)


MOONCAKE_VALUE = st.one_of(CELL.filter(lambda v: not isinstance(v, (bytes, pd.Timestamp))), st.integers(0, 10**6))


@seed(zlib.crc32(b"mooncake"))
@settings(FUZZ, max_examples=150)
@given(
    lines=st.lists(
        st.one_of(
            st.fixed_dictionaries({k: MOONCAKE_VALUE for k in ("timestamp", "input_length", "output_length")}).map(
                lambda d: json.dumps(d)
            ),
            st.sampled_from(["[" * 5000, '{"timestamp": 1' + "0" * 5000 + "}", "{", "[]", "null"]),
            st.text(max_size=20),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_mooncake_file_imports_or_is_an_input_error_naming_it(tmp_path_factory, lines):
    """The JSONL importer too (traces/importers.py): deep nesting, huge integers, lists and booleans for numbers."""
    path = tmp_path_factory.getbasetemp() / "fuzz-mooncake.jsonl"
    path.write_text("\n".join(lines) + "\n")
    trace = read_or_input_error(import_mooncake, path)
    if trace is not None:
        check_trace(trace)
