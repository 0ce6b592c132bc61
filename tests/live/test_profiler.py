"""``kairos profile``: capture a running server's service times into the profile schema, merge, and read back."""

import pandas as pd
import pytest

from harness.cli import main
from harness.core.errors import InputError
from harness.core.profiles import Profile
from harness.live.profiler import CaptureConfig, capture, merge_into, parse_batches
from servers.emulated import EmulatedConfig
from servers.process import spawn_server, stop_processes


def test_parse_batches_ranges_and_lists():
    assert parse_batches("10:50:20") == (10, 30, 50)
    assert parse_batches("100, 1,10,10") == (1, 10, 100)
    for bad in ("0:10:5", "10:5:1", "a,b", "10:20", ""):
        with pytest.raises(InputError) as err:
            parse_batches(bad)
        assert err.value.field == "batches"


def test_capture_config_checks_its_fields():
    with pytest.raises(InputError, match="http://HOST:PORT"):
        CaptureConfig("localhost:8000", "rm2", "x")
    with pytest.raises(InputError) as err:
        CaptureConfig("http://127.0.0.1:1", "rm2", "x", samples=1)
    assert err.value.field == "samples"


@pytest.fixture
def stepped_profile(tmp_path):
    """rm2 on tiny.x: 20 ms at batch 10, 40 ms at batch 20 (every sample)."""
    path = tmp_path / "stepped.parquet"
    rows = [
        {"instance_type": "tiny.x", "model": "rm2", "batch_size": b, "compute_ms": ms, "load_ms": 0.0}
        for b, ms in ((10, 20.0), (20, 40.0))
        for _ in range(6)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture
def emulated(stepped_profile):
    proc = spawn_server("emulated", EmulatedConfig("tiny.x", "rm2", profiles=stepped_profile), name="emulated")
    yield proc
    stop_processes([proc])


def test_profile_recovers_an_emulated_instance_and_merges(emulated, tmp_path, capsys):
    out = tmp_path / "captured.parquet"
    pd.DataFrame(  # an existing file: its other type stays, its (tiny-2t, rm2, 10) rows are replaced
        [
            {"instance_type": "other.x", "model": "rm2", "batch_size": 10, "compute_ms": 1.0, "load_ms": 0.0},
            {"instance_type": "tiny-2t", "model": "rm2", "batch_size": 10, "compute_ms": 999.0, "load_ms": 0.0},
        ]
        * 2
    ).to_parquet(out)
    argv = ["profile", "--url", emulated.url, "--model", "rm2", "--instance-type", "tiny-2t"]
    assert main([*argv, "--batches", "10,20", "--samples", "8", "--warmup", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "[1/2] batch 10: 8 samples" in err and "[2/2] batch 20" in err
    frame = pd.read_parquet(out)
    assert len(frame[frame["instance_type"] == "tiny-2t"]) == 16 and (frame["compute_ms"] < 999).all()
    assert len(frame[frame["instance_type"] == "other.x"]) == 2
    prof = Profile.load(out)
    for batch, expected in ((10, 20.0), (20, 40.0)):
        measured = prof.mean_ms("tiny-2t", "rm2", batch)
        # The emulated instance's own parsing is inside the sampled time and its reply lateness is learned and slept
        # off; what remains is the client's send and receive beyond an empty request's (about 0.5 ms here), and on a
        # loaded CI host the wake-ups the instance cannot make up (once 6.4 ms on average over 8 samples, in a full
        # test run on this VM, before it learned). How close it comes is a benchmark's figure (README: Measured
        # here); the test pins the bucket (batch 10's 20 ms against batch 20's 40 ms) and that nothing is lost or
        # double-counted.
        assert expected - 0.5 <= measured <= 1.25 * expected + 2.0, (batch, measured)
    captured = frame[frame["instance_type"] == "tiny-2t"]
    assert (captured["compute_ms"] >= 19.5).all()  # the server's reported compute time, not the client's


def test_profile_errors_name_the_problem(emulated, tmp_path):
    with pytest.raises(InputError, match="model 'ncf' not served"):
        capture(CaptureConfig(emulated.url, "ncf", "tiny.x", batches=(10,), samples=2))
    with pytest.raises(InputError, match="batch 500 answered 400"):
        capture(CaptureConfig(emulated.url, "rm2", "tiny.x", batches=(500,), samples=2, warmup=0))
    with pytest.raises(InputError, match="ConnectionRefusedError"):
        capture(CaptureConfig("http://127.0.0.1:9", "rm2", "tiny.x", batches=(10,), samples=2))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="bad.parquet: cannot read"):
        merge_into(bad, pd.DataFrame(columns=["instance_type", "model", "batch_size", "compute_ms", "load_ms"]))
