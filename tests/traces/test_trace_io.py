"""Trace files: parquet/CSV round trips, validation errors naming file/column/row, shipped samples."""

from __future__ import annotations

import numpy as np
import pytest

from harness.core.errors import InputError
from traces.generate import generate_trace
from traces.io import DEFAULT_TRACE, read_trace, sample_path, write_trace
from traces.schema import Trace, TraceError


def _trace() -> Trace:
    extra = {
        "request_id": np.array(["007", "a", "b", "c"], dtype=object),
        "tokens_in": np.array([5, 0, 7, 1000], dtype=np.int64),
        "tokens_out": np.array([1, 2, 3, 4], dtype=np.int64),
    }
    return Trace(
        np.array([0.0, 0.1, 0.1 + 0.2, 7.123456789012345]),
        np.array([10, 1, 990, 1000]),
        np.array(["rm2", "1", "wnd", "rm2"], dtype=object),
        extra,
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".CSV"])
def test_round_trip_keeps_every_column_exactly(tmp_path, suffix):
    original = _trace()
    path = write_trace(original, tmp_path / "sub" / f"t{suffix}")
    back = read_trace(path)
    assert np.array_equal(back.arrival_s, original.arrival_s)  # bit-exact, CSV included
    assert back.batch_size.tolist() == [10, 1, 990, 1000]
    assert back.model.tolist() == ["rm2", "1", "wnd", "rm2"]  # "1" stays a string
    assert back.extra["request_id"].tolist() == ["007", "a", "b", "c"]  # leading zeros kept
    assert back.extra["tokens_in"].tolist() == [5, 0, 7, 1000]
    assert back.extra["tokens_out"].tolist() == [1, 2, 3, 4]
    assert back.source == str(path)


def test_round_trip_without_optional_columns(tmp_path):
    t = generate_trace(50, 10.0, rng=np.random.default_rng(1))
    back = read_trace(write_trace(t, tmp_path / "g.csv"))
    assert back.extra == {}
    assert np.array_equal(back.arrival_s, t.arrival_s)
    assert np.array_equal(back.batch_size, t.batch_size)


@pytest.mark.parametrize("name", ["t.json", "t", "t.parquet.gz"])
def test_unsupported_suffix_names_the_file(tmp_path, name):
    with pytest.raises(TraceError, match="unsupported trace format") as err:
        read_trace(tmp_path / name)
    assert name in str(err.value)
    with pytest.raises(TraceError, match=name.replace(".", r"\.")):
        write_trace(_trace(), tmp_path / name)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(TraceError, match=r"nope\.parquet: no such file"):
        read_trace(tmp_path / "nope.parquet")


def test_directory_is_not_a_trace(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(TraceError, match=r"d\.csv: not a file"):
        read_trace(tmp_path / "d.csv")


@pytest.mark.parametrize(
    "name,data",
    [
        ("bad.parquet", b"this is not parquet"),
        ("bad.csv", b""),
        ("bin.csv", b"arrival_s,batch_size,model\n0,\xff\xfe,rm2\n"),
    ],
)
def test_unreadable_file_names_the_file(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(TraceError) as err:
        read_trace(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)
    assert isinstance(err.value, InputError)  # so the CLI prints one line and exits 2


@pytest.mark.parametrize(
    "body,column,row",
    [
        ("batch_size,model\n10,rm2\n", "arrival_s", None),
        ("arrival_s,batch_size,model\n0,10,rm2\n2,10,rm2\n1,10,rm2\n", "arrival_s", 3),
        ("arrival_s,batch_size,model\n0,10,rm2\n1,0,rm2\n", "batch_size", 2),
        ("arrival_s,batch_size,model\n0,10,rm2\n1,10,rm2\n2,ten,rm2\n", "batch_size", 3),
        ("arrival_s,batch_size,model\n0,10,rm2\n1,2.5,rm2\n", "batch_size", 2),
        ("arrival_s,batch_size,model\nzero,10,rm2\n", "arrival_s", 1),
        ("arrival_s,batch_size,model\n-1,10,rm2\n", "arrival_s", 1),
        ("arrival_s,batch_size,model\n0,10,rm2\n1,10,\n", "model", 2),
        ("arrival_s,batch_size,model,tokens_in\n0,10,rm2,3\n1,10,rm2,-4\n", "tokens_in", 2),
    ],
)
def test_csv_validation_errors_name_file_column_and_row(tmp_path, body, column, row):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:")
    assert repr(column) in msg
    if row is not None:
        assert f"row {row}:" in msg


def test_parquet_validation_errors_name_file_column_and_row(tmp_path):
    path = tmp_path / "bad.parquet"
    bad = _trace().to_frame()
    bad.loc[2, "arrival_s"] = 0.05  # before row 2's 0.1
    bad.to_parquet(path)
    # Values print as written (0.05), not as numpy 2 reprs (np.float64(0.05)).
    with pytest.raises(
        TraceError,
        match=rf"{path}: column 'arrival_s', row 3: 0\.05 is before the previous "
        rf"row's 0\.1 \(arrivals must be non-decreasing\)",
    ):
        read_trace(path)


def test_header_only_trace_is_rejected(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("arrival_s,batch_size,model\n")
    with pytest.raises(TraceError, match="no queries"):
        read_trace(path)


def test_shipped_default_sample_is_the_documented_kairos_trace():
    path = sample_path()
    assert path.name == DEFAULT_TRACE and path.stat().st_size < 300_000
    shipped = read_trace(path)
    regenerated = generate_trace(
        20_000, 100.0, arrivals="poisson", batch_mix="kairos", model="rm2", rng=np.random.default_rng(2023)
    )
    assert np.array_equal(shipped.arrival_s, regenerated.arrival_s)
    assert np.array_equal(shipped.batch_size, regenerated.batch_size)
    assert shipped.models == ["rm2"]


def test_shipped_azure_slice_has_license_and_attribution():
    path = sample_path("azure_llm_conv_slice.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "TIMESTAMP,ContextTokens,GeneratedTokens" and len(lines) == 2001
    assert (path.parent / "LICENSE-azure-public-dataset-CC-BY-4.0.txt").is_file()
    assert "CC BY 4.0" in (path.parent / "ATTRIBUTION.md").read_text()


def test_unknown_sample_lists_the_shipped_ones():
    with pytest.raises(TraceError, match=DEFAULT_TRACE):
        sample_path("nope.parquet")
