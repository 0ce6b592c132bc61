"""Prepare the GPU check for a lent device machine: the wheels it lacks, in parts small enough to carry.

A lent machine (see the README's GPU row) has Python 3.12 with PyTorch, numpy, pandas, scipy, pyarrow, aiohttp,
onnx and the CPU `onnxruntime`, but no registry: `onnxruntime-gpu`, Locust and the harness's other needs travel
from here as wheels, at most 64 MiB a call with the working tree. This script, run here:

    python benchmarks/gpu_carry.py [--python 3.12] [--ort 1.30.0] [--part-mib 52] [--dir .whl]

downloads them into `.whl/` (git-ignored), splits the `onnxruntime-gpu` wheel (about 250 MB) into parts, checks
each call's size and prints the calls: the first carries the small wheels and checks that everything imports
there, the next each carry one part, and the last carries the last part and runs `benchmarks/gpu_device.sh run`
(the GPU tests, then `benchmarks/gpu_headtohead.py`). Each call keeps what the calls before it left, as long as
the machine stays warm between them (it goes back after about 30 s idle), so issue them one right after another.

ONNX Runtime 1.30's GPU wheel links CUDA 13 (libcublas.so.13, libcudart.so.13), which the device's image has
(cupy-cuda13x, nvidia-cudnn-cu13): no CUDA library travels.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# What to bring: the harness's imports, the test plugins its GPU tests use, and their dependencies, less what the
# device's image holds (its package list in the device tool's KINDS.md, read 2026-11-17). Names normalized.
ROOTS = ("locust", "orjson", "httptools", "plotly", "pytest-aiohttp")
DEVICE_HAS = frozenset(
    """aiohappyeyeballs aiohttp aiosignal anyio attrs certifi charset-normalizer click colorama contourpy cycler
    filelock frozenlist fsspec h11 httpcore httpx hypothesis idna iniconfig jinja2 markupsafe msgpack multidict
    narwhals numpy onnx onnxruntime packaging pandas pillow pip pluggy propcache protobuf psutil pyarrow pygments
    pytest pytest-timeout python-dateutil pyyaml requests rich scipy setuptools six sortedcontainers sympy
    typing-extensions urllib3 uvloop werkzeug wheel yarl zipp flatbuffers""".split()
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
CALL_LIMIT_MIB = 64
# Everything a call sends but the carried paths: the tracked and untracked files of the checkout.
TREE_MARGIN_MIB = 8


def needed(roots: tuple[str, ...], has: frozenset[str], python: str) -> dict[str, str]:
    """{name: version} of ``roots`` and their dependencies that ``has`` lacks, walked through this environment's
    installed metadata (the versions CI tests), for CPython ``python`` on Linux, extras' dependencies left out."""
    env = {"python_version": python, "python_full_version": f"{python}.0", "implementation_name": "cpython"}
    env |= {"platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux"}
    env |= {"platform_machine": "x86_64", "os_name": "posix", "extra": ""}
    todo, found = [canonicalize_name(r) for r in roots], {}
    while todo:
        name = todo.pop()
        if name in found or name in has:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{name}: not installed here; pip install -e '.[test]' first, so its version is the tested one")
        found[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(canonicalize_name(req.name))
    return found


def download(specs: list[str], python: str, dest: Path) -> None:
    """``pip download`` of binary wheels for CPython ``python`` on manylinux x86_64, no dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + specs, check=True)


def split(wheel: Path, dest: Path, part_bytes: int) -> list[Path]:
    """``wheel`` in files ``part-NN`` of at most ``part_bytes`` under ``dest``, with its name and SHA-256 beside."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("part-*"):
        old.unlink()
    data = wheel.read_bytes()
    (dest / "NAME").write_text(wheel.name + "\n")
    (dest / "SHA256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    parts = []
    for k, start in enumerate(range(0, len(data), part_bytes)):
        part = dest / f"part-{k:02d}"
        part.write_bytes(data[start : start + part_bytes])
        parts.append(part)
    return parts


def mib(path: Path) -> float:
    """Size of a file or folder in MiB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main() -> int:
    """Download, split, check sizes, print the calls."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="3.12", help="the device's Python (default 3.12)")
    ap.add_argument("--ort", default="1.30.0", help="onnxruntime-gpu version (default 1.30.0, a CUDA 13 build)")
    ap.add_argument("--part-mib", type=int, default=52, help="size of each part of the onnxruntime-gpu wheel")
    ap.add_argument("--dir", type=Path, default=Path(".whl"))
    args = ap.parse_args()
    wheels, full, parts_dir = args.dir / "wheels", args.dir / "full", args.dir / "ort"
    pins = needed(ROOTS, DEVICE_HAS, args.python)
    download([f"{n}=={v}" for n, v in sorted(pins.items())], args.python, wheels)
    download([f"onnxruntime-gpu=={args.ort}"], args.python, full)
    wheel = next(full.glob(f"onnxruntime_gpu-{args.ort}-*.whl"))
    parts = split(wheel, parts_dir, args.part_mib * 2**20)
    print(f"{len(pins)} wheels, {mib(wheels):.1f} MiB: {', '.join(f'{n}=={v}' for n, v in sorted(pins.items()))}")
    print(f"{wheel.name}: {mib(wheel):.1f} MiB in {len(parts)} parts of at most {args.part_mib} MiB")
    budget = CALL_LIMIT_MIB - TREE_MARGIN_MIB
    if mib(wheels) > budget or args.part_mib > budget:
        print(f"a call would carry more than {budget} MiB beside the tree: lower --part-mib", file=sys.stderr)
        return 1
    root = args.dir.as_posix()
    print("\nThe calls (the device tool's `run`), one right after another:")
    print(f'1. carry ["{root}/wheels"], command "bash benchmarks/gpu_device.sh check", timeout_s 120')
    for k, part in enumerate(parts[:-1], start=2):
        print(f'{k}. carry ["{part.as_posix()}"], command "ls -l {root}/ort", timeout_s 60')
    print(
        f'{len(parts) + 1}. carry ["{parts[-1].as_posix()}", "{root}/ort/NAME", "{root}/ort/SHA256"], '
        'command "bash benchmarks/gpu_device.sh run", timeout_s 600'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
