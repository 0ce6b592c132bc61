"""The ``kairos`` command: a thin argparse front that translates options into frozen configs.

Each command module exposes ``register(subparsers)``, adding its parser with ``set_defaults(func=run)``. Only this
package (and the locustfile) knows option names. Bad input raises ``InputError``; it becomes one line on stderr and
exit code 2, never a traceback, naming the value by the option the user typed (an option's ``dest`` is the
library's field name for the value).
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
    "profile": "harness.cli.profile",
}


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line, as InputError does."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(names: list[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with the subcommands in ``names`` (all by default)."""
    parser = _Parser(prog="kairos", description="Trace-driven load testing and simulation of inference dispatchers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module in COMMAND_MODULES.items():
        if not names or name in names:
            importlib.import_module(module).register(sub)
    return parser


def option_names(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, str]:
    """Field name -> option string of every option of the (sub)commands that ``argv`` invokes."""
    names: dict[str, str] = {}
    words = set(argv)
    while parser is not None:
        nested = None
        for action in parser._actions:
            if action.option_strings:
                names.setdefault(action.dest, max(action.option_strings, key=len))
            elif isinstance(action, argparse._SubParsersAction):
                nested = next((p for name, p in action.choices.items() if name in words), None)
        parser = nested
    return names


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kairos`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([first] if first in COMMAND_MODULES else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"kairos {args.command}: error: {exc.shown_as(option_names(parser, argv))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kairos {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
