"""Statistics of benchmark outcomes: Wilson score intervals, the exact McNemar test, timing summaries.

Pure Python + numpy (no scipy), so results files can be aggregated anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054
"""Two-sided 95 % standard-normal quantile, Phi^-1(0.975)."""


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial success rate k / n.

    Formula (Wilson 1927; Brown, Cai & DasGupta 2001, eq. 4):
    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``p = k / n``; clipped to [0, 1].

    Args:
        k: successes, 0 <= k <= n.
        n: trials (episodes with status ok). n == 0 gives the uninformative (0.0, 1.0).
        z: standard-normal quantile; the default gives a two-sided 95 % interval.

    Raises:
        ValueError: negative counts, k > n, or z <= 0.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if z <= 0:
        raise ValueError(f"wilson_interval: z must be > 0, got {z}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # Exact at the boundaries (floating point leaves ~1e-17 there otherwise).
    return (0.0 if k == 0 else lo), (1.0 if k == n else hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes.

    ``b`` = pairs where only A succeeded, ``c`` = pairs where only B succeeded. Under H0 the discordant pairs
    are Binomial(b + c, 1/2), so ``p = min(1, 2 * P[X <= min(b, c)])`` (McNemar 1947; the "exact" conditional
    test as in statsmodels ``mcnemar(exact=True)``). Computed with exact integer arithmetic.

    Raises:
        ValueError: a negative count.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def timing_summary(samples_s: Sequence[float]) -> dict[str, float | int]:
    """Summarize durations given in seconds as milliseconds: ``{"mean", "p50", "p90", "p99", "n"}``.

    Percentiles use numpy's default linear interpolation. An empty input gives zeros with n = 0.
    """
    arr = np.asarray(samples_s, dtype=np.float64) * 1e3
    if arr.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "n": 0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "mean": round(float(arr.mean()), 4),
        "p50": round(float(p50), 4),
        "p90": round(float(p90), 4),
        "p99": round(float(p99), 4),
        "n": int(arr.size),
    }


def pool_timing_summaries(summaries: Sequence[dict]) -> dict[str, float | int]:
    """Combine per-episode :func:`timing_summary` dicts into one (ms).

    ``mean`` is exact (weighted by each summary's ``n``). The percentiles are the n-weighted means of the
    per-episode percentiles -- an approximation: exact pooled percentiles would need every step's timing, which
    episode records do not keep.
    """
    used = [s for s in summaries if s and s.get("n", 0) > 0]
    total = sum(int(s["n"]) for s in used)
    if total == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "n": 0}
    out: dict[str, float | int] = {
        key: round(sum(float(s[key]) * int(s["n"]) for s in used) / total, 4) for key in ("mean", "p50", "p90", "p99")
    }
    out["n"] = total
    return out
