"""What the GPU check carries to a lent machine: the wheels it lacks, and a big wheel in parts that join back."""

from __future__ import annotations

import hashlib
import subprocess

from benchmarks.gpu_carry import DEVICE_HAS, ROOTS, needed, split


def test_the_wheels_are_what_the_device_lacks_for_its_python():
    pins = needed(ROOTS, DEVICE_HAS, "3.12")
    # Locust and what it pulls in that the device's image has not, at the versions tested here
    assert {"locust", "gevent", "flask", "pyzmq", "orjson", "httptools", "plotly", "pytest-aiohttp"} <= set(pins)
    assert not set(pins) & DEVICE_HAS  # numpy, pandas, aiohttp...: the device's own
    assert "cffi" not in pins  # pyzmq needs it on PyPy only: markers are read for CPython on Linux
    assert all(pins.values())


def test_the_parts_join_into_the_wheel(tmp_path):
    wheel = tmp_path / "big-1.0-py3-none-any.whl"
    wheel.write_bytes(bytes(range(256)) * 41)  # 10,496 bytes: 4 parts of 3,000, the last shorter
    parts = split(wheel, tmp_path / "ort", 3000)
    assert [p.name for p in parts] == ["part-00", "part-01", "part-02", "part-03"]
    assert all(p.stat().st_size <= 3000 for p in parts)
    assert (tmp_path / "ort" / "NAME").read_text().strip() == wheel.name
    # joined as benchmarks/gpu_device.sh joins them (cat part-*), checked against the SHA-256 beside them
    joined = subprocess.run(["sh", "-c", "cat part-*"], cwd=tmp_path / "ort", capture_output=True, check=True).stdout
    assert joined == wheel.read_bytes()
    assert (tmp_path / "ort" / "SHA256").read_text().strip() == hashlib.sha256(joined).hexdigest()
    # a second split leaves no stale part behind
    assert len(split(wheel, tmp_path / "ort", 6000)) == 2 and len(list((tmp_path / "ort").glob("part-*"))) == 2


def test_the_device_script_says_how_to_use_it(tmp_path):
    env = {"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(["bash", "benchmarks/gpu_device.sh"], capture_output=True, text=True, env=env)
    assert run.returncode == 2 and "usage: bash benchmarks/gpu_device.sh check|run" in run.stderr


def test_run_stops_where_a_part_is_missing(tmp_path):
    whl = tmp_path / "whl"
    wheel = tmp_path / "big-1.0-py3-none-any.whl"
    wheel.write_bytes(b"x" * 5000)
    split(wheel, whl / "ort", 2000)
    (whl / "ort" / "part-01").unlink()  # the machine went back between two calls
    env = {"WHL": str(whl), "OUT": str(tmp_path / "out"), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(["bash", "benchmarks/gpu_device.sh", "run"], capture_output=True, text=True, env=env)
    assert run.returncode == 1 and "the parts do not join into the wheel" in run.stdout
