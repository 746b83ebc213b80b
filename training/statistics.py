"""Intervals for what evaluations report: Wilson for proportions, bootstrap for means and for the
paired differences between two models measured on the same sessions (scipy does the work)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval for a proportion: sound at small n and at 0 or n successes."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    interval = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return max(0.0, interval.low), min(1.0, interval.high)


def proportion(successes: int, n: int) -> dict:
    """``successes`` of ``n`` as a share with its Wilson interval, rounded to three decimals (share None at n 0)."""
    low, high = wilson_interval(successes, n)
    return {
        "k": successes,
        "n": n,
        "share": round(successes / n, 3) if n else None,
        "ci_low": round(low, 3),
        "ci_high": round(high, 3),
    }


def bootstrap_mean(values: Sequence[float], seed: int = 0) -> dict:
    """The mean with a 95% percentile-bootstrap interval (None where there is no value)."""
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None}
    mean = sum(values) / len(values)
    if len(values) == 1 or max(values) == min(values):  # nothing to resample: the interval is the point
        return {"n": len(values), "mean": round(mean, 3), "ci_low": round(mean, 3), "ci_high": round(mean, 3)}
    from scipy.stats import bootstrap

    interval = bootstrap(
        (values,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile", random_state=seed
    ).confidence_interval
    return {
        "n": len(values),
        "mean": round(mean, 3),
        "ci_low": round(float(interval.low), 3),
        "ci_high": round(float(interval.high), 3),
    }


def paired_difference(pairs: Sequence[tuple[float | None, float | None]], seed: int = 0) -> dict:
    """``b - a`` over the pairs where both were measured (the same session played by two models):
    its mean, a bootstrap interval, and whether the interval lies wholly above or below zero."""
    differences = [b - a for a, b in pairs if a is not None and b is not None]
    summary = bootstrap_mean(differences, seed)
    if summary["mean"] is None:
        summary["outside_interval"] = None
    else:
        summary["outside_interval"] = summary["ci_low"] > 0 or summary["ci_high"] < 0
    return summary
