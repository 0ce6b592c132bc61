"""Values as strict JSON (RFC 8259): builtins only, and non-finite floats as null, since ``json.dumps`` would write
``Infinity`` and ``NaN``, which jq, JavaScript's ``JSON.parse`` and most other readers reject. An unserved tail's p99
(inf) and an unknown bound (NaN) both become null; the text beside a figure says which."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd


def plain(obj):
    """Python, numpy and pandas values as JSON-able builtins (non-finite floats as None, other objects as text)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    return str(obj)


def dumps(obj, **kwargs) -> str:
    """``json.dumps`` of ``plain(obj)``, strict: it can write no ``NaN`` or ``Infinity``."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)
