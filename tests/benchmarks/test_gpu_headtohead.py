"""The GPU check's script, rehearsed without a GPU: a CPU server stands in for `cuda`, so what the lent machine will
run is known to work up to the GPU itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from servers.models import MODEL_NAMES

SCRIPT = "benchmarks/gpu_headtohead.py"


@pytest.mark.slow
def test_a_cpu_stand_in_profiles_the_five_models_at_buckets_that_were_measured(tmp_path):
    args = ["--gpu-type", "cpu-1t", "--cpu-type", "cpu-2t", "--only", "profile", "--samples", "2"]
    run = subprocess.run(
        [sys.executable, SCRIPT, *args, "--bucket-step", "250", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [row for row in map(str.split, run.stdout.splitlines()) if row and row[0] in MODEL_NAMES]
    # each model at the smallest bucket, the one at about 500 and 1000: never a batch below what was measured
    assert [(r[0], int(r[1])) for r in rows if r[0] == "rm2"] == [("rm2", 250), ("rm2", 500), ("rm2", 1000)]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows) and len(rows) == 3 * len(MODEL_NAMES)
    assert sorted(p.name for p in tmp_path.glob("profile-*.parquet")) == sorted(
        f"profile-{m}.parquet" for m in MODEL_NAMES
    )


def test_the_stand_in_must_be_another_type_than_the_cpu_servers(tmp_path):
    args = ["--gpu-type", "cpu-2t", "--cpu-type", "cpu-2t", "--out", str(tmp_path)]
    run = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--gpu-type and --cpu-type are both cpu-2t" in run.stderr
