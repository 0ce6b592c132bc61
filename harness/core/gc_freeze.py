"""Keep the cyclic garbage collector from stalling a latency-critical loop.

A process that has imported numpy, pandas, pyarrow and scipy holds hundreds of thousands of container objects; a
full (generation 2) collection scans them all and stops the event loop for 10-80 ms on a small VM, which shows up
directly in p99 latency (measured with ``benchmarks/dispatcher_overhead.py``). ``gc.freeze()`` moves everything
alive now into a permanent generation that collections skip; objects made later are collected as usual.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def frozen_gc():
    """Collect once, freeze what is alive for the duration of the block, unfreeze after."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
