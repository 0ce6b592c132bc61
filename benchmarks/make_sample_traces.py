"""Regenerate the sample traces shipped in traces/data (deterministic: fixed seed, fixed source slice).

    python benchmarks/make_sample_traces.py [--azure-source AzureLLMInferenceTrace_conv.csv]

The Kairos-mix sample is always rewritten; the Azure slice only when its source CSV is given.
"""

from __future__ import annotations

import argparse
from itertools import islice
from pathlib import Path

import numpy as np

from traces.generate import generate_trace
from traces.io import DEFAULT_TRACE, write_trace

DATA_DIR = Path(__file__).resolve().parents[1] / "traces" / "data"
KAIROS_SEED = 2023
KAIROS_QUERIES = 20_000
KAIROS_RATE_QPS = 100.0
AZURE_SLICE = "azure_llm_conv_slice.csv"
AZURE_SLICE_ROWS = 2_000


def make_kairos_sample(out_dir: Path = DATA_DIR) -> Path:
    """The Kairos-mix Poisson trace for rm2: 20,000 queries at 100 QPS from default_rng(2023)."""
    trace = generate_trace(
        KAIROS_QUERIES,
        KAIROS_RATE_QPS,
        arrivals="poisson",
        batch_mix="kairos",
        model="rm2",
        rng=np.random.default_rng(KAIROS_SEED),
    )
    return write_trace(trace, out_dir / DEFAULT_TRACE)


def make_azure_slice(source: Path, out_dir: Path = DATA_DIR) -> Path:
    """The header and first 2,000 data rows of the Azure conv trace, bytes unchanged."""
    out = out_dir / AZURE_SLICE
    with source.open("rb") as src, out.open("wb") as dst:
        dst.writelines(islice(src, AZURE_SLICE_ROWS + 1))
    return out


def main() -> None:
    """Command-line entry: rewrite the samples."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--azure-source", type=Path, help="AzureLLMInferenceTrace_conv.csv to slice")
    args = parser.parse_args()
    print(make_kairos_sample())
    if args.azure_source:
        print(make_azure_slice(args.azure_source))


if __name__ == "__main__":
    main()
