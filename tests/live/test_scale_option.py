"""``--scale`` in live runs: the locustfile's option, LiveOptions.scale, and the phase traces LiveRun builds with it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import InputError
from harness.live.options import LiveOptions
from harness.live.run import LiveRun

ROOT = Path(__file__).resolve().parents[2]


def _run(**kw) -> LiveRun:
    return LiveRun(LiveOptions(model="rm2", phase_seconds=5.0, phase_queries=400, min_queries=100, **kw), log=print)


def test_phase_trace_uses_the_scale_option_and_the_seed():
    time_run, thin_run = _run(), _run(scale="thin", seed=3)
    base = thin_run.base  # the shipped Poisson trace, 100 qps
    assert time_run.options.scale == "time" and "scaled to 30 qps" in time_run.phase_trace(30.0).source
    phase = thin_run.phase_trace(30.0)
    assert len(phase) == 400 and "thinned to 30 qps" in phase.source
    # Thinned: the queries kept are the base trace's, at its own times up to the stretch that makes the rate exact
    # (at most 1 / (2 (m - 1)) with m ~ 6,000 kept: under 2 ms over this phase's first ~13 s).
    base_s, phase_s = base.arrival_s - base.arrival_s[0], phase.arrival_s - phase.arrival_s[0]
    nearest = np.abs(base_s[:, None] - phase_s[None, :]).argmin(axis=0)
    assert np.all(np.abs(base_s[nearest] - phase_s) < 2e-3) and np.all(np.diff(nearest) >= 0)
    again = _run(scale="thin", seed=3).phase_trace(30.0)
    assert np.array_equal(again.arrival_s, phase.arrival_s)
    assert not np.array_equal(_run(scale="thin", seed=4).phase_trace(30.0).arrival_s, phase.arrival_s)
    high = _run(scale="superpose").phase_trace(450.0)
    assert len(high) == 2250 and "5 copies superposed" in high.source


def test_phase_trace_refuses_an_unknown_scale():
    with pytest.raises(InputError) as info:
        _run(scale="warp").phase_trace(30.0)
    assert info.value.field == "scale"


OPTIONS_PROBE = """
import json
from argparse import Namespace

import harness.kairos_load as k
from harness.core.errors import InputError
from locust.argument_parser import get_parser

parser = get_parser(default_config_files=[])
opts = parser.parse_args(["--scale", "superpose"])
action = next(a for a in parser._actions if a.dest == "scale")
out = {"parsed": k.live_options(opts).scale, "default": parser.get_default("scale"), "in_ui": action.include_in_web_ui,
       "from_ui": k.live_options(Namespace(**dict(vars(opts), scale="thin"))).scale, "flag": k.FLAGS["scale"],
       "listed": "scale" in k.WEB_UI_OPTIONS}
try:
    k.live_options(Namespace(**dict(vars(opts), scale="warp")))
except InputError as exc:
    out["error"] = exc.shown_as(k.FLAGS)
print(json.dumps(out))
"""


def test_locustfile_scale_option():
    proc = subprocess.run([sys.executable, "-c", OPTIONS_PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "parsed": "superpose",
        "default": "time",
        "in_ui": True,
        "from_ui": "thin",
        "flag": "--scale",
        "listed": True,
        "error": "--scale 'warp': expected one of time, thin, superpose",
    }
