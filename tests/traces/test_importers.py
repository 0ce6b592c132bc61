"""Importers: each public trace format on a tiny file, the size mapping, and errors naming file/column/row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.core.errors import InputError
from traces.importers import (
    DEFAULT_MAPPINGS,
    IMPORTERS,
    SizeMapping,
    import_azure_functions,
    import_azure_llm,
    import_burstgpt,
    import_mooncake,
    import_trace,
)
from traces.io import sample_path
from traces.schema import TraceError

AZURE_2023 = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,1020,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:47.0000000,6001,5
2023-11-16 18:15:50.9951690,0,16
"""

AZURE_2024 = """TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-10 00:00:00.009930+00:00,60,1
2024-05-10 01:00:01.5+01:00,61,2
2024-05-10 00:00:02+00:00,59,3
"""

BURSTGPT = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,GPT-4,1087,0,1087,API log
5,ChatGPT,12,100,112,Conversation log
130.5,ChatGPT,6000000,7,6000007,Conversation log
"""

FUNCTIONS = """app,func,end_timestamp,duration
a1,f1,10.0,0.5
a1,f2,10.2,2.0
a2,f1,12.0,0.0001
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_2023_sorts_stably_and_maps_tokens(tmp_path):
    t = import_azure_llm(_write(tmp_path, "conv.csv", AZURE_2023))
    assert t.arrival_s.tolist() == pytest.approx([0.0, 0.319410, 4.314579, 4.314579], abs=1e-9)
    assert t.extra["request_id"].tolist() == ["1", "3", "2", "4"]  # ties keep file order
    assert t.extra["tokens_in"].tolist() == [1020, 6001, 396, 0]
    assert t.extra["tokens_out"].tolist() == [44, 5, 109, 16]
    # default: clip(ceil(tokens_in / 6 / 10) * 10, 1, 1000)
    assert t.batch_size.tolist() == [170, 1000, 70, 1]
    assert t.models == ["rm2"] and t.source.endswith("conv.csv")


def test_azure_2024_timestamps_with_offsets(tmp_path):
    t = import_trace("azure-llm", _write(tmp_path, "code.csv", AZURE_2024), model="wnd")
    # 01:00:01.5+01:00 is 00:00:01.5 UTC, so it comes second.
    assert t.arrival_s.tolist() == pytest.approx([0.0, 1.49007, 1.99007], abs=1e-9)
    assert t.extra["tokens_in"].tolist() == [60, 61, 59]
    assert t.batch_size.tolist() == [10, 20, 10]
    assert t.models == ["wnd"]


def test_azure_bad_timestamp_names_file_column_and_row(tmp_path):
    path = _write(tmp_path, "bad.csv", AZURE_2023.replace("2023-11-16 18:15:47.0000000", "yesterday"))
    with pytest.raises(TraceError, match=rf"{path}: column 'TIMESTAMP', row 3: 'yesterday' is not a timestamp"):
        import_azure_llm(path)


def test_azure_bad_token_count_names_file_column_and_row(tmp_path):
    path = _write(tmp_path, "bad.csv", AZURE_2023.replace(",109", ",-3"))
    with pytest.raises(TraceError, match=rf"{path}: column 'GeneratedTokens', row 2: -3 is not a number >= 0"):
        import_azure_llm(path)


@pytest.mark.parametrize(
    "fmt,text,column",
    [
        ("azure-llm", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", "GeneratedTokens"),
        ("burstgpt", BURSTGPT.replace("Request tokens", "Req"), "Request tokens"),
        ("azure-functions", "app,func,end_timestamp\na,f,1\n", "duration"),
    ],
)
def test_missing_column_names_file_and_column(tmp_path, fmt, text, column):
    path = _write(tmp_path, "t.csv", text)
    with pytest.raises(TraceError, match=rf"{path}: missing column\(s\) '{column}'"):
        import_trace(fmt, path)


def test_burstgpt(tmp_path):
    t = import_burstgpt(_write(tmp_path, "burst.csv", BURSTGPT))
    assert t.arrival_s.tolist() == [0.0, 0.0, 40.0, 125.5]
    assert t.extra["request_id"].tolist() == ["1", "3", "2", "4"]
    assert t.extra["tokens_in"].tolist() == [472, 12, 1087, 6000000]
    assert t.batch_size.tolist() == [80, 10, 190, 1000]
    out = import_trace("burstgpt", tmp_path / "burst.csv", SizeMapping("tokens_out", divisor=1, round_to=1))
    assert out.batch_size.tolist() == [18, 100, 1, 7]  # 0 response tokens -> min_batch


def test_burstgpt_bad_timestamp(tmp_path):
    path = _write(tmp_path, "burst.csv", BURSTGPT.replace("\n45,", "\nsoon,"))
    with pytest.raises(TraceError, match=rf"{path}: column 'Timestamp', row 2: 'soon'"):
        import_burstgpt(path)


def test_mooncake(tmp_path):
    lines = [
        {"timestamp": 1500, "input_length": 9000, "output_length": 10, "hash_ids": [1, 2]},
        {"timestamp": 0, "input_length": 100, "output_length": 20, "hash_ids": []},
        {"timestamp": 27, "input_length": 45 * 170, "output_length": 30, "hash_ids": [3]},
    ]
    path = _write(tmp_path, "moon.jsonl", "\n".join(map(json.dumps, lines[:2])) + "\n\n" + json.dumps(lines[2]) + "\n")
    t = import_mooncake(path)
    assert t.arrival_s.tolist() == pytest.approx([0.0, 0.027, 1.5])
    assert t.extra["request_id"].tolist() == ["2", "4", "1"]  # JSONL line numbers, blank line counted
    assert t.batch_size.tolist() == [10, 170, 200]  # input_length / 45
    total = import_trace("mooncake", path, SizeMapping("tokens_total", divisor=1, round_to=1, max_batch=10_000))
    assert total.batch_size.tolist() == [120, 7680, 9010]


@pytest.mark.parametrize(
    "line,match",
    [
        ('{"timestamp": 1, "input_length": 2}', r"missing column 'output_length' at row 2"),
        ('{"timestamp": 1, "input_length": 2, ', r"row 2: not valid JSON"),
        ("[1, 2, 3]", r"row 2: not a JSON object"),
        ('{"timestamp": "noon", "input_length": 2, "output_length": 3}', r"column 'timestamp', row 2: 'noon'"),
        ('{"timestamp": 1, "input_length": null, "output_length": 3}', r"column 'input_length', row 2"),
    ],
)
def test_mooncake_errors_name_file_key_and_line(tmp_path, line, match):
    good = '{"timestamp": 0, "input_length": 1, "output_length": 1}'
    path = _write(tmp_path, "moon.jsonl", good + "\n" + line + "\n")
    with pytest.raises(TraceError, match=rf"{path}: .*{match}"):
        import_mooncake(path)


def test_azure_functions_arrival_is_end_minus_duration(tmp_path):
    t = import_azure_functions(_write(tmp_path, "fn.csv", FUNCTIONS))
    # arrivals 9.5, 8.2, 11.9999 -> sorted from 8.2
    assert t.arrival_s.tolist() == pytest.approx([0.0, 1.3, 3.7999])
    assert t.extra["request_id"].tolist() == ["2", "1", "3"]
    assert t.batch_size.tolist() == [200, 50, 10]  # 2000 ms, 500 ms, 0.1 ms -> /10, round up to 10
    assert "tokens_in" not in t.extra


def test_azure_functions_negative_duration(tmp_path):
    path = _write(tmp_path, "fn.csv", FUNCTIONS.replace(",2.0", ",-2"))
    with pytest.raises(TraceError, match=rf"{path}: column 'duration', row 2"):
        import_azure_functions(path)


def test_size_mapping_formula():
    m = SizeMapping("x", divisor=2.0, min_batch=30, max_batch=95, round_to=10)
    assert m.apply(np.array([0, 1, 20, 21, 150, 189, 191, 1e9])).tolist() == [30, 30, 30, 30, 80, 95, 95, 95]
    # value / divisor / round_to lands on an exact integer that float division overshoots: still one step.
    assert 21.0 / 0.7 / 10 > 3  # float division overshoots 3 ...
    assert SizeMapping("x", divisor=0.7, round_to=10).apply(np.array([21.0])).tolist() == [30]  # ... not 40
    assert "ceil(x / 2 / 10)" in m.describe()


@pytest.mark.parametrize(
    "kwargs,option",
    [
        ({"divisor": 0}, "--divisor"),
        ({"divisor": float("nan")}, "--divisor"),
        ({"min_batch": 0}, "--min-batch"),
        ({"round_to": 0}, "--round-to"),
        ({"min_batch": 5, "max_batch": 4}, "--max-batch"),
        ({"max_batch": 2.5}, "--max-batch"),
        ({"field": ""}, "--size-field"),
    ],
)
def test_size_mapping_validation(kwargs, option):
    with pytest.raises(InputError) as exc:
        SizeMapping(**kwargs)
    assert exc.value.field == option.removeprefix("--").replace("-", "_")  # the CLI shows it as the option


def test_unknown_size_field_and_format(tmp_path):
    path = _write(tmp_path, "fn.csv", FUNCTIONS)
    with pytest.raises(InputError, match="^size field 'tokens_in': a azure-functions trace offers duration_ms"):
        import_trace("azure-functions", path, SizeMapping("tokens_in"))
    with pytest.raises(InputError, match="^format 'csv'"):
        import_trace("csv", path)
    with pytest.raises(InputError, match="^model "):
        import_trace("azure-functions", path, model="")


def test_missing_and_empty_files(tmp_path):
    for fmt in IMPORTERS:
        with pytest.raises(TraceError, match=r"gone\.csv: no such file"):
            import_trace(fmt, tmp_path / "gone.csv")
    with pytest.raises(TraceError, match="no records"):
        import_trace("azure-llm", _write(tmp_path, "h.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"))
    with pytest.raises(TraceError, match="no records"):
        import_trace("mooncake", _write(tmp_path, "e.jsonl", "\n"))
    with pytest.raises(TraceError, match=r"e\.csv: cannot read"):
        import_trace("burstgpt", _write(tmp_path, "e.csv", ""))


def test_registry_and_defaults_agree():
    assert set(IMPORTERS) == set(DEFAULT_MAPPINGS) == {"azure-llm", "burstgpt", "mooncake", "azure-functions"}


def test_shipped_azure_slice_imports():
    t = import_trace("azure-llm", sample_path("azure_llm_conv_slice.csv"))
    assert len(t) == 2000 and t.arrival_s[0] == 0.0 and np.all(np.diff(t.arrival_s) >= 0)
    assert 300 < t.duration_s < 600
    assert 100 <= np.median(t.batch_size) <= 250  # the default divisor aims the median near the Kairos body
    assert t.batch_size.max() <= 1000 and t.batch_size.min() >= 1
