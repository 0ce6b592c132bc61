"""Instance catalogue: $/hour per instance type (the Kairos artifact's table ships with the package)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from harness.core.errors import InputError

SHIPPED_PRICES = "aws_prices.csv"


def load_prices(path: str | Path | None = None) -> dict[str, float]:
    """Read ``instance_type,usd_per_hour`` rows; without a path, the shipped AWS on-demand table."""
    src = Path(path) if path else resources.files("harness.core") / "data" / SHIPPED_PRICES
    try:
        with src.open("rb") as fh:
            frame = pd.read_csv(fh)
    except FileNotFoundError:
        raise InputError(f"{src}: no such price file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{src}: not a CSV price table ({exc})") from None
    for col in ("instance_type", "usd_per_hour"):
        if col not in frame.columns:
            raise InputError(f"{src}: missing column {col!r} (need instance_type, usd_per_hour)")
    price = pd.to_numeric(frame["usd_per_hour"], errors="coerce")
    bad = price.isna() | (price < 0)
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise InputError(
            f"{src}: column 'usd_per_hour', row {row + 1}: {frame['usd_per_hour'].iloc[row]!r} is not a price >= 0"
        )
    return dict(zip(frame["instance_type"].astype(str), price.astype(float)))
