"""Fuzzing the profile reader and the pool-config parser: bad input is an InputError that says where, nothing else.

``Profile.load`` gets CSV and parquet files that are valid but for one cell (then the error must name the file, the
column and the row), files whose columns have the wrong types altogether (lists, bytes, timestamps, booleans...),
damaged parquet and plain garbage. ``PoolConfig.parse`` gets text. Whatever comes back must be an ``InputError``
(never a KeyError, ValueError, UnicodeDecodeError or pyarrow error), or a profile/config that holds only what its
schema allows. The table-file helpers here serve the trace reader's fuzzing too (``tests/traces``).
"""

from __future__ import annotations

import csv
import io
import re
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from harness.core.errors import InputError
from harness.core.pool_config import MAX_INSTANCES, PoolConfig
from harness.core.profiles import MAX_BATCH, PROFILE_COLUMNS, Profile

FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))

# What pandas' read_csv takes for a missing value by default: such a name is no name.
NA_TEXT = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A"}
NA_TEXT |= {"NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
NAME = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=10).filter(
    lambda s: s not in NA_TEXT and s.strip() == s
)


# -- table files: shared with tests/traces/test_fuzz_trace_files.py -------------------------------------------------
def csv_bytes(columns: list[str], rows: list[list[str]]) -> bytes:
    """A CSV file (quoted where needed) of text cells."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as a parquet file."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` cut short, or with a few bytes overwritten."""
    if draw(st.booleans()):
        return data[: draw(st.integers(0, len(data) - 1))]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


GARBAGE = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(st.text(alphabet=',"\n\r\t ;0123456789.-eabnN\x00\ufeff', max_size=20), max_size=10).map(
        lambda lines: "\n".join(lines).encode("utf-8")
    ),
)


def weird_column(n: int) -> st.SearchStrategy[pa.Array]:
    """A parquet column of ``n`` values of a type no schema column has: lists, structs, bytes, timestamps..."""
    return st.sampled_from(
        [
            pa.array([[1.0, 2.0]] * n),
            pa.array([{"x": 1}] * n),
            pa.array([b"\xff\xfe"] * n, pa.binary()),
            pa.array([0] * n, pa.timestamp("s")),
            pa.array([1_700_000_000_000] * n, pa.timestamp("ms")),
            pa.array([True] * n),
            pa.array([None] * n, pa.null()),
            pa.array([2**64 - 1] * n, pa.uint64()),
            pa.array([float("nan")] * n),
            pa.array([float("inf")] * n),
            pa.array(["x"] * n).dictionary_encode(),
            pa.array([0] * n, pa.duration("s")),
            pa.array([[]] * n, pa.list_(pa.string())),
        ]
    )


def assert_names_the_file(err: InputError, path: Path) -> None:
    """An InputError (a subclass is fine) whose message names ``path``."""
    assert isinstance(err, InputError), f"{type(err).__name__}: {err}"
    assert str(path) in str(err), str(err)


def assert_names_the_cell(err: InputError, path: Path, column: str, row: int) -> None:
    """The message names the file, the column and the (1-based data) row, or that the column's type is wrong."""
    assert_names_the_file(err, path)
    message = str(err)
    assert f"column {column!r}" in message, message
    assert f"row {row + 1}:" in message or re.search(rf"column {column!r} holds \S+ values", message), message


def read_or_input_error(read, path: Path):
    """``read(path)``, or None when it raised an InputError naming the file; any other exception fails the test."""
    try:
        return read(path)
    except InputError as err:
        assert_names_the_file(err, path)
        return None
    except Exception as exc:  # the defect this fuzzing looks for
        raise AssertionError(f"{path.name}: {type(exc).__name__} instead of an InputError: {exc}") from exc


# -- profiles --------------------------------------------------------------------------------------------------------
BAD_PROFILE_CELLS = {
    "instance_type": st.sampled_from(["", "NA", "nan"]),
    "model": st.sampled_from(["", "null", "None"]),
    "batch_size": st.sampled_from(["0", "-3", "1.5", "1e20", "abc", "", "inf", "99999999999999999999", "0x10"]),
    "compute_ms": st.sampled_from(["-1", "inf", "-inf", "nan", "", "abc", "1e400", "1,5"]),
    "load_ms": st.sampled_from(["-0.5", "inf", "nan", "", "x", "--1"]),
}


@st.composite
def profile_rows(draw) -> list[list[str]]:
    n = draw(st.integers(1, 12))
    return [
        [
            draw(NAME),
            draw(NAME),
            str(draw(st.integers(1, 10_000))),
            repr(draw(st.floats(0, 1e6))),
            repr(draw(st.floats(0, 1e3))),
        ]
        for _ in range(n)
    ]


def _check_profile(prof: Profile) -> None:
    for (itype, model), tab in prof.tables.items():
        assert isinstance(itype, str) and itype and isinstance(model, str) and model
        assert (np.diff(tab.buckets) > 0).all() and 1 <= tab.buckets[0] and tab.buckets[-1] <= MAX_BATCH
        assert all(np.isfinite(s).all() and (s >= 0).all() and len(s) for s in tab.samples_ms)


@seed(zlib.crc32(b"profile-csv"))
@settings(FUZZ, max_examples=250)
@given(rows=profile_rows(), where=st.data())
def test_a_profile_csv_with_one_bad_cell_names_file_column_and_row(tmp_path_factory, rows, where):
    path = tmp_path_factory.getbasetemp() / "fuzz-profile.csv"
    column = where.draw(st.sampled_from(PROFILE_COLUMNS))
    row = where.draw(st.integers(0, len(rows) - 1))
    rows[row][PROFILE_COLUMNS.index(column)] = where.draw(BAD_PROFILE_CELLS[column])
    path.write_bytes(csv_bytes(list(PROFILE_COLUMNS), rows))
    with pytest.raises(Exception) as caught:
        Profile.load(path)
    assert_names_the_cell(caught.value, path, column, row)


@seed(zlib.crc32(b"profile-parquet"))
@settings(FUZZ, max_examples=150)
@given(rows=profile_rows(), where=st.data())
def test_a_profile_parquet_of_any_column_types_is_read_or_refused(tmp_path_factory, rows, where):
    """Columns of the wrong type, then the same file damaged: a valid profile or an InputError naming the file."""
    path = tmp_path_factory.getbasetemp() / "fuzz-profile.parquet"
    cols = {
        "instance_type": pa.array([r[0] for r in rows]),
        "model": pa.array([r[1] for r in rows]),
        "batch_size": pa.array([int(r[2]) for r in rows]),
        "compute_ms": pa.array([float(r[3]) for r in rows]),
        "load_ms": pa.array([float(r[4]) for r in rows]),
    }
    for name in where.draw(st.lists(st.sampled_from(PROFILE_COLUMNS), max_size=2, unique=True)):
        cols[name] = where.draw(weird_column(len(rows)))
    data = parquet_bytes(pa.table(cols))
    for content in (data, where.draw(damaged(data))):
        path.write_bytes(content)
        prof = read_or_input_error(Profile.load, path)
        if prof is not None:
            _check_profile(prof)


@seed(zlib.crc32(b"profile-garbage"))
@settings(FUZZ, max_examples=150)
@given(content=GARBAGE, suffix=st.sampled_from([".csv", ".parquet", ".CSV", ""]))
def test_a_profile_file_of_garbage_is_an_input_error(tmp_path_factory, content, suffix):
    path = tmp_path_factory.getbasetemp() / f"fuzz-garbage{suffix}"
    path.write_bytes(content)
    prof = read_or_input_error(Profile.load, path)
    if prof is not None:
        _check_profile(prof)


# -- pool configs ----------------------------------------------------------------------------------------------------
POOL_TEXT = st.one_of(
    st.text(alphabet="=, \t\n.-_0123456789abcdexyzé٣\x00", max_size=40),
    st.text(max_size=30),
    st.lists(
        st.tuples(
            st.one_of(NAME, st.text(max_size=6)),
            st.one_of(
                st.integers(-5, 20_000).map(str),
                st.sampled_from(["", "1e3", "1_0", "2.0", "٣", "+3", " 4 ", "99999999999999999999999", "0x1"]),
            ),
            st.booleans(),
        ),
        max_size=6,
    ).map(lambda parts: ",".join(f"{t}={n}" if with_n else t for t, n, with_n in parts)),
)


@seed(zlib.crc32(b"pool-config"))
@settings(FUZZ, max_examples=600)
@given(text=POOL_TEXT)
def test_a_pool_config_parses_or_is_an_input_error_naming_the_field(text):
    try:
        pool = PoolConfig.parse(text)
    except InputError as err:
        assert err.field == "pool_config", err
        return
    except Exception as exc:
        raise AssertionError(f"{text!r}: {type(exc).__name__}: {exc}") from exc
    assert pool.counts and 0 < pool.size <= MAX_INSTANCES
    for name, n in pool.counts:
        assert name == name.strip() and name.isprintable() and "," not in name and "=" not in name and n > 0
    assert PoolConfig.parse(str(pool)) == pool  # what it prints, it reads back


HEADER = ",".join(PROFILE_COLUMNS).encode() + b"\n"


def _profile_parquet(**changes) -> bytes:
    cols = {"instance_type": ["t"], "model": ["m"], "batch_size": [1], "compute_ms": [1.0], "load_ms": [0.0]}
    return parquet_bytes(pa.table({**cols, **changes}))


# What the fuzzing above found, each by the file that showed it (before: what came back instead).
FOUND = [
    ("inf.csv", HEADER + b"t,m,1,inf,0\n", "column 'compute_ms', row 1: inf is not a finite number"),  # mean inf
    ("huge-batch.csv", HEADER + b"t,m,1e20,1,0\n", "row 1: 1e+20 is not an integer from 1"),  # bucket -2**63
    ("no-type.csv", HEADER + b",m,1,1,0\n", "column 'instance_type', row 1: nan is not an instance type"),  # dropped
    ("bools.csv", HEADER + b"t,m,True,1,0\n", "column 'batch_size' holds bool values"),  # batch 1
    ("bytes.parquet", _profile_parquet(instance_type=pa.array([b"\xff"])), "is not an instance type"),  # Unicode...
    ("list.parquet", _profile_parquet(instance_type=[["a"]]), "is not an instance type"),  # type "['a']"
    ("uint64.parquet", _profile_parquet(batch_size=pa.array([2**64 - 1], pa.uint64())), "is not an integer"),  # -1
    ("stamps.parquet", _profile_parquet(compute_ms=pa.array([0], pa.timestamp("s"))), "holds datetime64"),  # 0 ms
    ("bad-utf8.parquet", _profile_parquet(model=["mm"]).replace(b"mm", b"\xff\xfe", 1), "Invalid UTF8"),  # Arrow...
]


@pytest.mark.parametrize("name, content, needle", FOUND, ids=[f[0] for f in FOUND])
def test_what_fuzzing_found_in_profiles_is_an_input_error_naming_the_file(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        Profile.load(path)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("a=99999999999", "more than 10000 instances"),  # a pool of 1e11, built instance by instance
        ("a=1_0", "count must be an integer"),  # was 10
        ("a=٣", "count must be an integer"),  # was 3 (int() reads other scripts' digits)
        ("a\x1b=1", "control character"),  # an instance type no one can type or see
        ("a=6000,b=6000", "12000 instances, at most 10000"),
    ],
)
def test_what_fuzzing_found_in_pool_configs_is_an_input_error(text, needle):
    with pytest.raises(InputError, match=needle) as err:
        PoolConfig.parse(text)
    assert err.value.field == "pool_config"
