"""Wilson intervals and the exact McNemar test against known values; timing summaries."""

from __future__ import annotations

import math

import pytest

from harness.metrics import (
    mcnemar_exact,
    pool_timing_summaries,
    timing_summary,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # Wilson score 95 % intervals to 4 decimals (the same numbers as
        # scipy.stats.binomtest(k, n).proportion_ci(method="wilson"); 0/10 -> [0, 0.2775] is the textbook case).
        (0, 10, 0.0, 0.2775),
        (1, 10, 0.0179, 0.4042),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (95, 100, 0.8882, 0.9785),
        (81, 100, 0.7222, 0.8749),
    ],
)
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4), f"wilson_interval({k}, {n}) = {got}"


def test_wilson_matches_scipy_everywhere() -> None:
    stats = pytest.importorskip("scipy.stats")
    for n in (1, 2, 7, 40):
        for k in range(n + 1):
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12), (k, n)


def test_wilson_edges_and_errors() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(3, 3)
    assert hi == 1.0 and 0.0 < lo < 1.0
    narrow = wilson_interval(50, 100, z=1.0)
    wide = wilson_interval(50, 100)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    for bad in ((-1, 5), (6, 5), (1, -1)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            wilson_interval(*bad)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 0, 1.0),
        (3, 3, 1.0),
        (0, 5, 0.0625),  # 2 * 0.5^5
        (1, 9, 0.021484375),  # 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
        (10, 2, 0.03857421875),  # 2 * (1 + 12 + 66) / 4096
        (2, 10, 0.03857421875),
    ],
)
def test_mcnemar_exact_known_values(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_large_counts_and_errors() -> None:
    # Symmetric binomial: P[X <= 450] for n = 1000 is tiny but representable; the p-value stays in (0, 1].
    p = mcnemar_exact(450, 550)
    assert 0.0 < p < 0.01
    assert mcnemar_exact(500, 500) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
    # Cross-check against the normal approximation with continuity correction at moderate n.
    b, c = 30, 50
    z = (abs(b - c) - 1) / math.sqrt(b + c)
    approx = math.erfc(z / math.sqrt(2))
    assert mcnemar_exact(b, c) == pytest.approx(approx, rel=0.15)


def test_timing_summary_and_pooling() -> None:
    s = timing_summary([0.001, 0.002, 0.003, 0.004])
    assert s["n"] == 4 and s["mean"] == pytest.approx(2.5) and s["p50"] == pytest.approx(2.5)
    assert timing_summary([])["n"] == 0
    pooled = pool_timing_summaries([timing_summary([0.001] * 3), timing_summary([0.004]), {}])
    assert pooled["n"] == 4 and pooled["mean"] == pytest.approx(1.75)
