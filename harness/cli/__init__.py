"""The ``kairos`` command: a thin argparse front that translates options into frozen configs.

Each command module exposes ``register(subparsers)``, adding its parser with ``set_defaults(func=run)``.
Bad input raises ``InputError``; it becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from harness.core.errors import InputError

# Command modules, imported lazily so `kairos trace info` does not pay for onnxruntime or aiohttp.
COMMAND_MODULES = {
    "simulate": "harness.cli.simulate",
    "trace": "harness.cli.trace",
    "allocate": "harness.cli.allocate",
    "serve": "harness.cli.serve",
    "models": "harness.cli.models",
    "report": "harness.cli.report",
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line, as InputError does."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(names: list[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with the subcommands whose modules exist."""
    parser = _Parser(prog="kairos", description="Trace-driven load testing and simulation of inference dispatchers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module in COMMAND_MODULES.items():
        if names and name not in names:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # command not built yet in this checkout
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kairos`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([first] if first in COMMAND_MODULES else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"kairos {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kairos {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
