"""``kairos trace``: generate, import, scale and info through harness.cli.main; bad input -> one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from traces.io import read_trace, sample_path, write_trace
from traces.schema import Trace


def _info(capsys, path) -> dict:
    capsys.readouterr()
    assert main(["trace", "info", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one JSON object on one line
    return json.loads(out)


def test_generate_then_info(tmp_path, capsys):
    out = tmp_path / "g.parquet"
    assert (
        main(
            [
                "trace",
                "generate",
                "--queries",
                "3000",
                "--rate",
                "250",
                "--arrivals",
                "gamma:0.5",
                "--batch-mix",
                "uniform:1:8",
                "--model",
                "ncf",
                "--seed",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote 3000 queries" in capsys.readouterr().out
    info = _info(capsys, out)
    assert info["queries"] == 3000 and info["models"] == {"ncf": 3000}
    assert info["mean_rate_qps"] == pytest.approx(250, rel=0.1)
    assert info["gap_cv"] == pytest.approx(2**0.5, rel=0.1)
    assert 1 <= info["batch_size"]["min"] <= info["batch_size"]["p50"] <= info["batch_size"]["max"] <= 8


def test_generate_is_deterministic_for_a_seed(tmp_path):
    args = ["trace", "generate", "--queries", "200", "--rate", "10", "--seed", "7", "--out"]
    assert main(args + [str(tmp_path / "a.csv")]) == 0
    assert main(args + [str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_import_with_mapping_overrides_and_rate(tmp_path, capsys):
    out = tmp_path / "azure.csv"
    assert (
        main(
            [
                "trace",
                "import",
                "--format",
                "azure-llm",
                str(sample_path("azure_llm_conv_slice.csv")),
                "--divisor",
                "1",
                "--round-to",
                "1",
                "--max-batch",
                "500",
                "--size-field",
                "tokens_out",
                "--model",
                "wnd",
                "--rate",
                "80",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "ceil(tokens_out / 1 / 1) * 1, 1, 500" in capsys.readouterr().out
    t = read_trace(out)
    assert len(t) == 2000 and t.models == ["wnd"]
    assert t.mean_rate_qps == pytest.approx(80, rel=1e-12)
    assert np.array_equal(t.batch_size, np.minimum(t.extra["tokens_out"], 500))


def test_scale(tmp_path, capsys):
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    write_trace(Trace(np.array([0.0, 1.0, 3.0]), np.array([1, 2, 3]), np.array(["m"] * 3, dtype=object)), src)
    assert main(["trace", "scale", str(src), "--speedup", "2", "--out", str(out)]) == 0
    assert read_trace(out).arrival_s.tolist() == [0.0, 0.5, 1.5]
    assert main(["trace", "scale", str(src), "--rate", "10", "--out", str(out)]) == 0
    assert read_trace(out).mean_rate_qps == 10


def test_scale_thins_and_superposes_with_a_seed(tmp_path):
    base = read_trace(sample_path())  # 20,000 queries
    out = tmp_path / "out.parquet"
    argv = ["trace", "scale", str(sample_path()), "--scale", "thin", "--queries", "500", "--out", str(out)]
    low = base.mean_rate_qps / 4
    assert main([*argv, "--rate", f"{low}", "--seed", "1"]) == 0
    thinned = read_trace(out)
    assert len(thinned) == 500 and thinned.mean_rate_qps == pytest.approx(low, rel=0.1)
    assert set(thinned.batch_size) <= set(base.batch_size)
    assert main([*argv, "--rate", f"{low}", "--seed", "2"]) == 0
    assert read_trace(out).batch_size.tolist() != thinned.batch_size.tolist()  # another seed, another subset
    assert main([*argv[:4], "superpose", *argv[5:], "--rate", f"{3 * base.mean_rate_qps}"]) == 0
    assert read_trace(out).mean_rate_qps == pytest.approx(3 * base.mean_rate_qps, rel=0.1)
    assert main(["trace", "scale", str(sample_path()), "--speedup", "2", "--scale", "thin", "--out", str(out)]) == 2


def test_info_text(capsys):
    assert main(["trace", "info", str(sample_path())]) == 0
    out = capsys.readouterr().out
    assert "queries     20000" in out and "burstiness" in out and "rm2 (20000)" in out


def test_info_of_a_single_query_has_no_rate(tmp_path, capsys):
    path = tmp_path / "one.csv"
    path.write_text("arrival_s,batch_size,model\n0,5,rm2\n")
    info = _info(capsys, path)
    assert info["mean_rate_qps"] is None and info["gap_cv"] is None and info["duration_s"] == 0


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["trace", "info", "{tmp}/missing.parquet"], "missing.parquet: no such file"),
        (["trace", "info", "{tmp}/bad.csv"], "bad.csv: column 'batch_size', row 2"),
        (["trace", "info", "{tmp}/x.txt"], "x.txt: unsupported trace format"),
        (["trace", "generate", "--queries", "0", "--rate", "1", "--out", "{tmp}/g.csv"], "--queries 0"),
        (["trace", "generate", "--queries", "5", "--rate", "-1", "--out", "{tmp}/g.csv"], "--rate"),
        (
            ["trace", "generate", "--queries", "5", "--rate", "1", "--arrivals", "bursty", "--out", "{tmp}/g.csv"],
            "--arrivals 'bursty'",
        ),
        (["trace", "generate", "--queries", "5", "--rate", "1", "--out", "{tmp}/g.xlsx"], "g.xlsx: unsupported"),
        (
            ["trace", "import", "--format", "azure-llm", "{tmp}/bad.csv", "--out", "{tmp}/o.csv"],
            "bad.csv: missing column(s) 'TIMESTAMP'",
        ),
        (
            ["trace", "import", "--format", "azure-llm", "{sample}", "--divisor", "-1", "--out", "{tmp}/o.csv"],
            "--divisor -1.0",
        ),
        (
            [
                "trace",
                "import",
                "--format",
                "azure-llm",
                "{sample}",
                "--size-field",
                "duration_ms",
                "--out",
                "{tmp}/o.csv",
            ],
            "--size-field 'duration_ms'",
        ),
        (["trace", "scale", "{tmp}/bad.csv", "--rate", "0", "--out", "{tmp}/o.csv"], "bad.csv: column"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.csv").write_text("arrival_s,batch_size,model\n0,1,rm2\n1,0,rm2\n")
    sample = str(sample_path("azure_llm_conv_slice.csv"))
    argv = [a.format(tmp=tmp_path, sample=sample) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("kairos trace: error: ")
    assert needle in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["trace"],
        ["trace", "import", "x.csv", "--format", "nope", "--out", "o.csv"],
        ["trace", "generate", "--queries", "many", "--rate", "1", "--out", "o.csv"],
        ["trace", "scale", "x.csv", "--rate", "1", "--speedup", "2", "--out", "o.csv"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
