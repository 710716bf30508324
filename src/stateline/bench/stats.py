"""Small statistics helpers (no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["median", "pct", "summary"]


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summary(seconds: Sequence[float]) -> dict:
    """median / p99 / mean in microseconds, and the sample count."""
    us = [x * 1e6 for x in seconds]
    return {
        "n": len(us),
        "median_us": round(median(us), 2),
        "p99_us": round(pct(us, 99), 2),
        "mean_us": round(sum(us) / len(us), 2) if us else math.nan,
    }
