"""Per-query records: the same columns from the simulator, the live dispatcher and the load generator."""

from __future__ import annotations

import numpy as np
import pandas as pd

RECORD_COLUMNS = ("request_id", "model", "batch_size", "arrival_s", "dispatch_s", "start_s", "finish_s",
                  "instance_id", "instance_type", "policy", "status")

# Status values: served; dropped by the policy (counts as a QoS violation); shed by a full queue;
# failed (instance error).
OK, DROPPED, SHED, FAILED = "ok", "dropped", "shed", "failed"


def latency_ms(records: pd.DataFrame) -> np.ndarray:
    """End-to-end latency per query in ms (finish - arrival); +inf for queries that were not served."""
    lat = (records["finish_s"].to_numpy(float) - records["arrival_s"].to_numpy(float)) * 1000.0
    served = (records["status"].to_numpy() == OK) & np.isfinite(lat)
    return np.where(served, lat, np.inf)
