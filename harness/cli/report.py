"""``kairos report RUN_DIR``: write the run's self-contained HTML report and print its path.

A live run killed with kill -9 is first rebuilt from what it streamed while it ran (``harness/live/recover.py``): the
phase it was in gets its rows in queries.parquet and a summary row marked invalid, then the report is built.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.live.recover import recover
from harness.report.page import build_report


def register(subparsers) -> None:
    """Add ``kairos report``."""
    p = subparsers.add_parser(
        "report",
        help="write a run directory's self-contained HTML report",
        description="Write an HTML report (interactive charts, tables; opens offline) of a "
        "run directory holding summary.parquet and optionally queries.parquet, "
        "run.json and allocation.parquet. A live run that was killed first gets the phase it was in rebuilt "
        "from the records it streamed (marked invalid: interrupted).",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="run directory (from the Locust harness or kairos simulate --out)"
    )
    p.add_argument("--out", metavar="FILE", help="where to write the page (default RUN_DIR/report.html)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``kairos report``."""
    run_dir = Path(args.run_dir)
    for r in recover(run_dir):
        print(
            f"kairos report: recovered phase {r.phase} ({r.dispatcher}) of a killed run: {r.queries} queries, "
            f"{r.answered_ok} answered",
            file=sys.stderr,
        )
    path = build_report(run_dir, out=Path(args.out) if args.out else None)
    print(path)
    return 0
