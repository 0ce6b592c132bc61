"""Per-query records: the same columns from the simulator, the live dispatcher and the load generator."""

from __future__ import annotations

import numpy as np
import pandas as pd

RECORD_COLUMNS = ("request_id", "model", "batch_size", "arrival_s", "dispatch_s", "start_s", "finish_s",
                  "instance_id", "instance_type", "policy", "status")

# Status values: served; dropped by the policy (counts as a QoS violation); shed by a full queue;
# failed (instance error).
OK, DROPPED, SHED, FAILED = "ok", "dropped", "shed", "failed"
STATUSES = (OK, DROPPED, SHED, FAILED)


def latency_ms(records: pd.DataFrame) -> np.ndarray:
    """End-to-end latency per query in ms (finish - arrival); +inf for queries that were not served."""
    lat = (records["finish_s"].to_numpy(float) - records["arrival_s"].to_numpy(float)) * 1000.0
    served = (records["status"].to_numpy() == OK) & np.isfinite(lat)
    return np.where(served, lat, np.inf)


def empty_records() -> pd.DataFrame:
    """A zero-row frame with the record columns and their dtypes."""
    return pd.DataFrame({
        "request_id": pd.Series([], dtype=object), "model": pd.Series([], dtype=object),
        "batch_size": pd.Series([], dtype=np.int64), "arrival_s": pd.Series([], dtype=float),
        "dispatch_s": pd.Series([], dtype=float), "start_s": pd.Series([], dtype=float),
        "finish_s": pd.Series([], dtype=float), "instance_id": pd.Series([], dtype=object),
        "instance_type": pd.Series([], dtype=object), "policy": pd.Series([], dtype=object),
        "status": pd.Series([], dtype=object),
    })
