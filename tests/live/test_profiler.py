"""``kairos profile``: capture a running server's service times into the profile schema, merge, and read back."""

import numpy as np
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
    mine = frame[frame["instance_type"] == "tiny-2t"]
    for batch, expected in ((10, 20.0), (20, 40.0)):
        samples = mine.loc[mine["batch_size"] == batch, ["compute_ms", "load_ms"]].sum(axis=1)
        # The emulated instance's own parsing is inside the sampled time and its reply lateness is learned and slept
        # off; the transport is priced at the query's wait, and the instance's reported compute time is a floor. On a
        # loaded CI host the wake-ups the instance cannot make up remain (once 6.4 ms on average over 8 samples, in a
        # full test run on this VM, before it learned; another run failed the mean's bound by a few ms): the median
        # pins the bucket (batch 10's 20 ms against batch 20's 40 ms) through a stalled sample or two, and the mean,
        # what the profile keeps, that nothing is double-counted. How close it comes is a benchmark's figure (README:
        # Measured here).
        assert expected - 0.5 <= samples.median() <= 1.25 * expected + 2.0, (batch, samples.tolist())
        assert expected - 0.5 <= prof.mean_ms("tiny-2t", "rm2", batch) < 1.75 * expected, (batch, samples.tolist())
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


def test_the_transport_is_priced_at_the_querys_wait_and_never_takes_service_below_the_reported_compute(
    emulated, monkeypatch
):
    from harness.live import profiler

    curves = []

    def curve(client, gaps_ms, n=25):
        # A round trip of 1 ms back to back and 15 ms after a 20 ms wait: far more than any host, to be seen.
        curves.append(tuple(gaps_ms))
        return np.asarray([0.0, 20.0]), np.asarray([1.0, 15.0])

    monkeypatch.setattr(profiler, "_transport_curve", curve)
    frame = capture(CaptureConfig(emulated.url, "rm2", "tiny.x", batches=(10,), samples=4, warmup=2))
    assert curves == [profiler.TRANSPORT_GAPS_MS]
    # e2e ~20.5 ms would leave ~6.6 ms after that transport; the instance says it computed ~20 ms, and it did.
    assert (frame["compute_ms"] > 19.0).all() and (frame["load_ms"] == 0.0).all()
    curves.clear()
    capture(CaptureConfig(emulated.url, "rm2", "tiny.x", batches=(10,), samples=2, warmup=0, idle_transport=False))
    assert curves == [(0.0,)]  # back to back only
    curves.clear()
    kept = capture(
        CaptureConfig(emulated.url, "rm2", "tiny.x", batches=(10,), samples=2, warmup=0, keep_transport=True)
    )
    assert curves == [] and (kept["compute_ms"] + kept["load_ms"] > 20.0).all()  # nothing subtracted, nothing probed


def test_the_transport_curve_times_empty_requests_after_each_wait(emulated):
    from harness.live.profiler import _Client, _transport_curve

    client = _Client(emulated.url, 10.0)
    try:
        gaps, rtts = _transport_curve(client, (0.0, 5.0), n=3)
    finally:
        client.close()
    assert list(gaps) == [0.0, 5.0] and len(rtts) == 2
    assert ((0 < rtts) & (rtts < 5.0)).all()  # the wait itself is not in the round trip
