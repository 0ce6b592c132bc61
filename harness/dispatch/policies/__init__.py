"""Dispatch policies, registered by name; the simulator and the live dispatcher build them the same way."""

from __future__ import annotations

import inspect

from harness.core.errors import InputError
from harness.dispatch.policies.base import NOTHING, BasePolicy, Decision, Policy, PolicyContext, Query
from harness.dispatch.policies.clockwork import Clockwork
from harness.dispatch.policies.deeprecsys import DeepRecSys
from harness.dispatch.policies.fcfs import FCFS
from harness.dispatch.policies.kairos import Kairos
from harness.dispatch.policies.kairos_type import KairosType
from harness.dispatch.policies.laxity import Laxity
from harness.dispatch.policies.push import LeastExpectedWork, LeastOutstanding, PowerOfTwo, RoundRobin

POLICIES: dict[str, type] = {
    cls.name: cls
    for cls in (
        Kairos,
        KairosType,
        Laxity,
        FCFS,
        DeepRecSys,
        Clockwork,
        RoundRobin,
        LeastOutstanding,
        PowerOfTwo,
        LeastExpectedWork,
    )
}


def _coerce(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def make_policy(spec: str) -> Policy:
    """Build a policy from ``NAME`` or ``NAME:key=value:key=value`` (tunables as in its docstring)."""
    name, *params = spec.strip().split(":")
    cls = POLICIES.get(name)
    if cls is None:
        raise InputError(f"{spec!r}: unknown policy (choose from {', '.join(POLICIES)})", field="policy")
    kwargs = {}
    accepted = inspect.signature(cls.__init__).parameters if cls.__init__ is not object.__init__ else {}
    for p in params:
        key, sep, value = p.partition("=")
        if not sep or key not in accepted or key == "self":
            raise InputError(
                f"{spec!r}: {p!r} is not a tunable of {name} "
                f"(tunables: {', '.join(k for k in accepted if k != 'self') or 'none'})",
                field="policy",
            )
        kwargs[key] = _coerce(value)
    return cls(**kwargs)


__all__ = ["POLICIES", "make_policy", "Policy", "PolicyContext", "Query", "Decision", "NOTHING", "BasePolicy"]
