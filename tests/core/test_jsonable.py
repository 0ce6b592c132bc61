"""Strict JSON from Python, numpy and pandas values."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.core.jsonable import dumps, plain


def test_non_finite_floats_become_null_and_numpy_becomes_builtins():
    value = {
        "p99_ms": math.inf,
        "low": float("nan"),
        "ci": np.array([1.5, np.inf]),
        "n": np.int64(3),
        "ok": np.bool_(True),
        1: (np.float32(2.5), None, pd.NA),
        "path": Path("/tmp/x"),
    }
    assert plain(value) == {
        "p99_ms": None,
        "low": None,
        "ci": [1.5, None],
        "n": 3,
        "ok": True,
        "1": [2.5, None, None],
        "path": "/tmp/x",
    }
    text = dumps(value)
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c))["ci"] == [1.5, None]
