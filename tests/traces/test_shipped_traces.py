"""The public traces shipped in ``traces/data`` import whole, with the row counts ATTRIBUTION.md states."""

import json

import numpy as np
import pytest

from traces.importers import import_trace
from traces.io import sample_path
from traces.scale import gap_cv


@pytest.mark.parametrize(
    "fmt, name, rows, span_s",
    [
        ("azure-llm", "azure_llm_code.csv", 8819, (3400.0, 3500.0)),  # one hour of the Azure code service
        ("mooncake", "mooncake_conversation.jsonl", 12031, (3500.0, 3600.0)),  # one hour of Kimi conversations
    ],
)
def test_shipped_trace_imports_with_its_stated_rows(fmt, name, rows, span_s):
    t = import_trace(fmt, sample_path(name))
    assert len(t) == rows and t.arrival_s[0] == 0.0 and np.all(np.diff(t.arrival_s) >= 0)
    assert span_s[0] < t.duration_s < span_s[1]
    assert t.batch_size.min() >= 1 and t.batch_size.max() <= 1000
    assert {"tokens_in", "tokens_out", "request_id"} <= set(t.extra)
    assert gap_cv(t.arrival_s) > 2  # both are burstier than Poisson (gap CV 1): why they are shipped


def test_mooncake_copy_keeps_only_the_fields_the_importer_reads():
    with sample_path("mooncake_conversation.jsonl").open(encoding="utf-8") as fh:
        keys = {tuple(json.loads(line)) for line in fh}
    assert keys == {("timestamp", "input_length", "output_length")}


def test_licences_and_attribution_are_shipped_beside_the_traces():
    attribution = sample_path("ATTRIBUTION.md").read_text(encoding="utf-8")
    for name in ("azure_llm_code.csv", "mooncake_conversation.jsonl", "LICENSE-mooncake-Apache-2.0.txt"):
        assert name in attribution
    assert "Apache License" in sample_path("LICENSE-mooncake-Apache-2.0.txt").read_text(encoding="utf-8")
    assert "Attribution 4.0" in sample_path("LICENSE-azure-public-dataset-CC-BY-4.0.txt").read_text(encoding="utf-8")
