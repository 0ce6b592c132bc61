"""Query traces: one schema (arrival_s, batch_size, model + optional fields), generators, importers, I/O."""

from traces.schema import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, Trace, TraceError

__all__ = ["Trace", "TraceError", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS"]
