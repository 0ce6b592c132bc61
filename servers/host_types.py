"""Instance types that say how a local ONNX Runtime server runs: ``cpu-2t`` (CPU, 2 intra-op threads), ``cuda``.

In ``--mode onnx`` an instance type such as ``r5n.large`` is only a label: every server runs with the pool's
``--threads``. A type named ``cpu-Nt``, ``cuda`` or ``cuda-Nt`` instead fixes the execution provider and the
intra-op thread count of its servers, so a pool such as ``cpu-2t=1,cpu-1t=2`` is heterogeneous for real on one
machine, and a live run profiles each such type before its sweep (``harness.live.local_profile``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.core.errors import InputError

_PATTERN = re.compile(r"^(cpu|cuda)(?:-([1-9][0-9]{0,2})t)?$")
CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass(frozen=True)
class HostType:
    """How the servers of one local instance type run: execution provider and ORT intra-op threads."""

    provider: str
    threads: int


def host_type(instance_type: str) -> HostType | None:
    """The settings an instance type names (``cpu-Nt``, ``cuda``, ``cuda-Nt``), None for a label like ``r5n.large``."""
    m = _PATTERN.match(instance_type)
    if m is None:
        return None
    provider, threads = m.group(1), m.group(2)
    if provider == "cpu" and threads is None:
        raise InputError(f"{instance_type!r}: say the thread count, e.g. cpu-1t or cpu-2t", field="instance_type")
    return HostType(provider, int(threads or 1))


def check_available(instance_types, available_providers: list[str]) -> None:
    """Refuse a ``cuda`` type where ONNX Runtime has no CUDA provider: its servers would run on the CPU under a GPU name."""
    cuda = sorted({t for t in instance_types if (h := host_type(t)) is not None and h.provider == "cuda"})
    if cuda and CUDA_PROVIDER not in available_providers:
        raise InputError(
            f"{', '.join(cuda)}: this ONNX Runtime has no {CUDA_PROVIDER} (it has {', '.join(available_providers)}); "
            "install the gpu extra (pip install -e '.[gpu]') on a machine with an NVIDIA GPU",
            field="instance_type",
        )
