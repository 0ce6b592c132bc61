"""Chaos in a live run: kill, stall, slow, fail or crash chosen instances at set times, and log what fired.

A schedule is ``ACTION:INSTANCE@AT[:DURATION[:SIZE]]``, comma-separated, e.g.
``kill:r5n.large-3@30s,stall:g4dn.xlarge-0@45s:5s``. AT counts from the start of each dispatcher's first phase, so
every dispatcher of a head-to-head meets the same faults at the same point of its run; between dispatchers the
instances a fault took down are started again and taken back into service.

Actions:

- ``kill``: SIGKILL the instance's process (the run must have started the pool); with a DURATION it is restarted
  that long after, on its own address, and the dispatcher probes it back into service;
- ``restart``: start a killed or exited instance again;
- ``spike``, ``stall``, ``error``, ``exit``: injected by the instance itself (``servers.faults``, over its
  ``/admin/fault``); a pool the run starts accepts them, a pool from a file must be started with ``--accept-faults``.

The controller runs on a thread (a greenlet under Locust's monkey patching) and never raises into the run: a fault
that could not be delivered is logged and recorded with its error.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from harness.core.errors import InputError
from servers.faults import FAULT_KINDS, Fault, parse_fault, parse_seconds

ACTIONS = ("kill", "restart", *FAULT_KINDS)


@dataclass(frozen=True)
class ChaosEvent:
    """One scheduled action on one instance: ``at_s`` after the dispatcher's first phase starts."""

    action: str
    instance: str
    at_s: float
    duration_s: float = 0.0
    fault: Fault | None = None  # what the instance injects, for the actions it carries out itself

    @property
    def label(self) -> str:
        """``kill:r5n.large-3@30s:10s``-style text of this event."""
        text = f"{self.action}:{self.instance}@{self.at_s:g}s"
        if self.duration_s:
            text += f":{self.duration_s:g}s"
        if self.fault is not None and self.fault.kind == "spike":
            text += f":{self.fault.extra_ms:g}ms"
        elif self.fault is not None and self.fault.kind == "error":
            text += f":{self.fault.status}"
        return text


def parse_chaos(text: str, field_name: str = "chaos") -> tuple[ChaosEvent, ...]:
    """Events from ``ACTION:INSTANCE@AT[:DURATION[:SIZE]],...``, in time order."""
    events = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        action, sep, rest = item.partition(":")
        instance, at_sep, when = rest.partition("@")
        if not sep or not at_sep or not instance or not when:
            raise InputError(f"{item!r}: expected ACTION:INSTANCE@AT[:DURATION[:SIZE]]", field=field_name)
        if action not in ACTIONS:
            raise InputError(f"{item!r}: action {action!r}: expected one of {', '.join(ACTIONS)}", field=field_name)
        if action in FAULT_KINDS:
            fault = parse_fault(f"{action}@{when}", field_name)
            # The instance injects it at once when told; the controller keeps the time.
            events.append(ChaosEvent(action, instance, fault.at_s, fault.duration_s, _at_zero(fault)))
            continue
        parts = when.split(":")
        if len(parts) > 2 or (action == "restart" and len(parts) > 1):
            raise InputError(f"{item!r}: {action} takes AT[:DURATION] (restart: AT only)", field=field_name)
        at_s = parse_seconds(parts[0], field_name)
        duration_s = parse_seconds(parts[1], field_name) if len(parts) > 1 else 0.0
        events.append(ChaosEvent(action, instance, at_s, duration_s))
    if not events:
        raise InputError(f"{text!r}: no event given", field=field_name)
    return tuple(sorted(events, key=lambda e: e.at_s))


def _at_zero(fault: Fault) -> Fault:
    return Fault(fault.kind, 0.0, fault.duration_s, fault.extra_ms, fault.status)


class ChaosTarget(Protocol):
    """What a controller acts on: instance ids and how to kill, restart and reach them (the live stack)."""

    ids: tuple[str, ...]
    can_kill: bool

    def kill(self, instance: str) -> None:
        """SIGKILL the instance's process."""

    def restart(self, instance: str) -> None:
        """Start a dead instance again on its own address."""

    def inject(self, instance: str, fault: Fault) -> None:
        """Have the instance inject ``fault`` now."""

    def dead(self) -> list[str]:
        """Ids of instances whose process has exited."""


class Chaos:
    """Fires a schedule's events on a thread, once per ``arm``; ``entries`` is the log of what fired."""

    def __init__(self, events: tuple[ChaosEvent, ...], target: ChaosTarget, log: Callable[[str], None] = print):
        unknown = sorted({e.instance for e in events} - set(target.ids))
        if unknown:
            raise InputError(
                f"no instance {', '.join(unknown)} in the pool (its instances: {', '.join(target.ids)})",
                field="chaos",
            )
        if not target.can_kill and any(e.action in ("kill", "restart") for e in events):
            raise InputError(
                "kill and restart need a pool the run starts (with --pool, use exit, which the instance does itself)",
                field="chaos",
            )
        self.events = events
        self.target = target
        self.log = log
        self.entries: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def arm(self, start_epoch: float, dispatcher: str) -> None:
        """Start the schedule from ``start_epoch`` (the dispatcher's first phase start)."""
        self.disarm()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._fire_all, args=(start_epoch, dispatcher), name="chaos", daemon=True
        )
        self._thread.start()

    def disarm(self) -> None:
        """Cancel what has not fired yet (a pending restart still runs), and wait for the thread."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=120)
            self._thread = None

    def heal(self) -> list[str]:
        """Start again every instance that is down (killed, exited); returns their ids."""
        down = self.target.dead() if self.target.can_kill else []
        for iid in down:
            try:
                self.target.restart(iid)
                self.log(f"chaos: {iid} restarted before the next dispatcher")
            except Exception as exc:  # the run goes on with the instance down; say so
                self.log(f"chaos: {iid} did not restart: {exc}")
        return down

    def _fire_all(self, start_epoch: float, dispatcher: str) -> None:
        queue = [(start_epoch + e.at_s, k, e, e.action) for k, e in enumerate(self.events)]
        heapq.heapify(queue)
        while queue:
            due, k, event, action = heapq.heappop(queue)
            if self._stop.wait(max(0.0, due - time.time())):
                return  # disarmed: what has not fired never will; heal() brings back what is down
            self._fire(event, action, dispatcher, start_epoch)
            if action == "kill" and event.duration_s > 0:
                heapq.heappush(queue, (due + event.duration_s, k, event, "restart"))

    def _fire(self, event: ChaosEvent, action: str, dispatcher: str, start_epoch: float) -> None:
        fired = time.time()
        entry = {
            "event": event.label,
            "action": action,
            "instance": event.instance,
            "dispatcher": dispatcher,
            "armed_epoch": start_epoch,
            "planned_at_s": event.at_s + (event.duration_s if action == "restart" and event.action == "kill" else 0),
            "fired_epoch": fired,
            "end_epoch": fired + event.duration_s if action != "restart" else fired,
            "error": "",
        }
        try:
            if action == "kill":
                self.target.kill(event.instance)
            elif action == "restart":
                self.target.restart(event.instance)
            else:
                self.target.inject(event.instance, event.fault or Fault(action))
            if action == "kill" and not event.duration_s:
                entry["end_epoch"] = float("nan")  # down until the dispatcher's sweep ends
        except Exception as exc:  # a fault that could not be delivered must not end the run
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        if action == "restart":
            entry["end_epoch"] = time.time()
        with self._lock:
            self.entries.append(entry)
        detail = f" FAILED: {entry['error']}" if entry["error"] else ""
        self.log(f"chaos: {action} {event.instance} at +{fired - start_epoch:.1f} s ({dispatcher}){detail}")


class PoolTarget:
    """A ChaosTarget over a live stack's pool: ``Pool.kill``/``Pool.restart``, and each instance's admin URL."""

    def __init__(self, instances, pool=None, post_json: Callable[..., dict] | None = None):
        self.urls = {i.id: i.url for i in instances}
        self.ids = tuple(self.urls)
        self.pool = pool
        self.can_kill = pool is not None
        self._post_json = post_json

    def kill(self, instance: str) -> None:
        """SIGKILL the instance's process."""
        self.pool.kill(instance)

    def restart(self, instance: str) -> None:
        """Start it again on its own address (nothing to do while it runs)."""
        if instance in self.pool.dead():
            self.pool.restart(instance)

    def inject(self, instance: str, fault: Fault) -> None:
        """Tell the instance to inject ``fault`` now."""
        self._post_json(self.urls[instance] + "/admin/fault", asdict(fault), timeout_s=10.0)

    def dead(self) -> list[str]:
        """Instances whose process has exited."""
        return self.pool.dead() if self.pool is not None else []
