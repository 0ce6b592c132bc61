"""``kairos report RUN_DIR``: write the run's self-contained HTML report and print its path."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.report.page import build_report


def register(subparsers) -> None:
    """Add ``kairos report``."""
    p = subparsers.add_parser(
        "report",
        help="write a run directory's self-contained HTML report",
        description="Write an HTML report (interactive charts, tables; opens offline) of a "
        "run directory holding summary.parquet and optionally queries.parquet, "
        "run.json and allocation.parquet.",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="run directory (from the Locust harness or kairos simulate --out)"
    )
    p.add_argument("--out", metavar="FILE", help="where to write the page (default RUN_DIR/report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kairos report``."""
    path = build_report(Path(args.run_dir), out=Path(args.out) if args.out else None)
    print(path)
    return 0
