"""The server kinds a process can run, and the entry point of a server child process.

A parent (a pool, a live run) starts a server as ``python -m servers.launch '{"kind": ..., "config": {...},
"listen": {...}}'``: the frozen config travels as JSON, so no command-line flag exists below the CLI. The child
rebuilds the config, serves it through ``servers.serving`` and prints the READY line the parent waits for. A kind
that serves several apps from one process (``emulated_host``: many emulated instances) carries its own ``serve``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import types
import typing
from pathlib import Path

from harness.core.errors import InputError
from servers.serving import Listen, ServerKind, serve

# Imported on demand: an emulated instance must not pay for scipy (the dispatcher) or ONNX (the model server) at
# start-up, when a pool starts a dozen of them at once on a small machine.
# ``module`` names its ``KIND``; ``module:NAME`` another attribute (a module may define more than one kind).
KIND_MODULES = {
    "model": "servers.model_server",
    "emulated": "servers.emulated",
    "emulated_host": "servers.emulated:HOST_KIND",
    "dispatcher": "servers.dispatcher",
}


def server_kind(name: str) -> ServerKind:
    """The kind registered under ``name``: a ServerKind, or a kind with its own ``serve`` (config, listen)."""
    try:
        module, _, attr = KIND_MODULES[name].partition(":")
    except KeyError:
        raise InputError(
            f"{name!r}: unknown server kind (choose from {', '.join(KIND_MODULES)})", field="kind"
        ) from None
    return getattr(importlib.import_module(module), attr or "KIND")


def to_plain(value):
    """A frozen config (nested dataclasses, tuples, paths) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def from_plain(cls: type, doc: dict):
    """Rebuild a frozen config of class ``cls`` from ``to_plain``'s output (its field types say how)."""
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: _convert(hints[f.name], doc[f.name]) for f in dataclasses.fields(cls) if f.name in doc}
    return cls(**kwargs)


def _convert(hint, value):
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _convert(next(a for a in args if a is not type(None)), value)
    if hint is Path:
        return Path(value)
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value)
    if origin is tuple:
        return tuple(_convert(args[0], v) for v in value)
    return value


def child_argv(kind: str, config, listen: Listen, python: str) -> list[str]:
    """The command line that runs ``config`` as a server of ``kind`` in a child process."""
    doc = {"kind": kind, "config": to_plain(config), "listen": to_plain(listen)}
    return [python, "-m", "servers.launch", json.dumps(doc)]


def main(argv: list[str] | None = None) -> int:
    """Serve the server (or host of servers) described by the JSON document in ``argv[0]``."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        doc = json.loads(argv[0])
        kind = server_kind(doc["kind"])
        config = from_plain(kind.config, doc["config"])
        listen = from_plain(Listen, doc["listen"])
        own = getattr(kind, "serve", None)  # a kind that binds several apps itself
        return own(config, listen) if own is not None else serve(kind, config, listen)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)  # the parent shows this line when the child dies before READY
        return 2


if __name__ == "__main__":
    sys.exit(main())
