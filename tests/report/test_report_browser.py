"""The HTML report in a real browser: headless Chromium draws every chart without a JavaScript error.

Skipped only where no Chromium is installed and the CI variable is unset; under CI a missing browser fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest

from harness.report.page import CHART_IDS, build_report
from tests.report.test_report import write_run

pytestmark = pytest.mark.slow  # whole stacks or long searches: left out of the quick loop

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """$CHROMIUM if set, else the first Chromium-family binary on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser binary; skip without one, unless under CI, where its absence is a failure."""
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Chromium was found (install Debian's chromium, or set $CHROMIUM)")
        pytest.skip("no Chromium binary found (apt-get install chromium, or set $CHROMIUM); not under CI")
    return path


@dataclass(frozen=True)
class PageResult:
    """What the browser left in the DOM and on stderr."""

    rendered: int | None
    expected: int | None
    chart_divs: int
    page_errors: str
    console_errors: list[str]


def parse_page(dom: str, stderr: str) -> PageResult:
    """The chart counters, the #report-errors text and the console error lines of one page load."""
    body = re.search(r"<body\b[^>]*>", dom)
    attrs = body.group(0) if body else ""

    def counter(name: str) -> int | None:
        found = re.search(rf'data-charts-{name}="(\d+)"', attrs)
        return int(found.group(1)) if found else None

    # Searched from <body> on: the scripts in <head> may mention the element too.
    errors = re.search(r'<pre id="report-errors"[^>]*>(.*?)</pre>', dom[body.end() :] if body else "", re.S)
    # Chromium logs console messages as "...:SEVERITY:CONSOLE(line)] ..."; uncaught exceptions say "Uncaught".
    bad = [line for line in stderr.splitlines() if "Uncaught" in line or re.search(r":(ERROR|FATAL):CONSOLE", line)]
    return PageResult(
        counter("rendered"),
        counter("expected"),
        len(re.findall(r"<div\b[^>]*\bdata-chart=", dom)),
        unescape(errors.group(1)).strip() if errors else "#report-errors missing",
        bad,
    )


def load_page(browser: str, page: Path, profile_dir: Path) -> PageResult:
    """Open ``page`` in headless Chromium (offline flags, virtual time) and parse the dumped DOM."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        "--virtual-time-budget=15000",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    return parse_page(proc.stdout, proc.stderr)


def test_parse_page_reads_counters_and_errors():
    dom = (
        '<html><body data-charts-expected="2" data-charts-rendered="1"><div id="a" data-chart="a"></div>'
        '<div data-chart="b"></div><pre id="report-errors">boom &amp; more</pre></body></html>'
    )
    stderr = (
        '[1:1:0101/000000.1:INFO:CONSOLE(3)] "Uncaught TypeError: x", source: file:///r.html (3)\n'
        "[1:1:0101/000000.2:ERROR:dbus/bus.cc:405] Failed to connect to the bus\n"
        '[1:1:0101/000000.3:ERROR:CONSOLE(9)] "failed", source: file:///r.html (9)\n'
    )
    result = parse_page(dom, stderr)
    assert (result.rendered, result.expected, result.chart_divs) == (1, 2, 2)
    assert result.page_errors == "boom & more"
    assert len(result.console_errors) == 2  # the dbus noise is not the page's


def test_every_chart_renders_without_errors(chromium, tmp_path):
    page = build_report(write_run(tmp_path / "run", partial=True))
    result = load_page(chromium, page, tmp_path / "profile")
    assert result.page_errors == "", f"errors in the page: {result.page_errors}"
    assert result.console_errors == [], "\n".join(result.console_errors)
    assert result.expected == len(CHART_IDS) == result.chart_divs
    assert result.rendered == result.expected, f"{result.rendered} of {result.expected} charts rendered"


def test_browser_check_catches_a_broken_page(chromium, tmp_path):
    # The report's own error collector on a page whose chart script throws: the check above must notice.
    html = build_report(write_run(tmp_path / "run")).read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    head, call, tail = html.rpartition("Plotly.newPlot(")  # the report's call, after plotly.js itself
    assert call
    broken.write_text(head + "Plotly.noSuchFunction(" + tail, encoding="utf-8")
    result = load_page(chromium, broken, tmp_path / "profile")
    assert "noSuchFunction" in result.page_errors
    assert result.rendered == 0 and result.expected == len(CHART_IDS)
