"""Findings: what an experiment's numbers say about the claim the course and the literature make
(../EXPERIMENTS.md's table), with an uncertainty over the seeds and a verdict.

A finding is computed, never tuned: the claim states the direction it expects, the statistic
is computed over every model the run trained, its 95 % interval comes from a bootstrap over the
seeds (scipy.stats.bootstrap, percentile method, seeded), and the verdict follows from the
interval alone — `holds` when all of it lies on the expected side of the null value, `does not
hold` when all of it lies on the other side, `inconclusive` otherwise (the interval straddles
the null, or too few seeds to resample).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats

from experiments.tracking import Tracker

Verdict = Literal["holds", "does not hold", "inconclusive"]
Direction = Literal["above", "below"]
CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass
class Finding:
    """One claim and what the run found: `statistic` says what `value` is, `interval` its 95 %
    bootstrap interval over seeds, `expect` on which side of `null` the claim puts it."""

    key: str
    claim: str
    statistic: str
    value: float
    interval: tuple[float, float]
    expect: Direction
    null: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        low, high = self.interval
        if not (math.isfinite(low) and math.isfinite(high)):
            return "inconclusive"
        expected_side = low > self.null if self.expect == "above" else high < self.null
        other_side = high < self.null if self.expect == "above" else low > self.null
        return "holds" if expected_side else "does not hold" if other_side else "inconclusive"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "interval": list(self.interval), "verdict": self.verdict}


def bootstrap(statistic: Callable[..., float], samples: Sequence[Sequence[float]], seed: int,
              paired: bool = True) -> tuple[float, float]:
    """95 % percentile bootstrap interval of `statistic(*samples)` over the samples' entries
    (paired: resampled together, e.g. the models of a correlation); (nan, nan) with fewer than
    3 entries, or when every resample gives the same value."""
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if min(len(a) for a in arrays) < 3:
        return math.nan, math.nan
    result = stats.bootstrap(arrays, statistic, paired=paired, vectorized=False, method="percentile",
                             confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                             random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation ρ(x, y); nan when either is constant."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def mean_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """mean(a) − mean(b)."""
    return float(np.mean(a) - np.mean(b))


def correlation(key: str, claim: str, x: Sequence[float], y: Sequence[float], *, expect: Direction,
                what: str, seed: int) -> Finding:
    """The finding `ρ(x, y)` (Spearman, over every model), bootstrap over the models."""
    return Finding(key, claim, f"Spearman ρ({what}) over {len(x)} models", spearman(x, y),
                   bootstrap(spearman, (x, y), seed), expect, details={"x": list(x), "y": list(y)})


def difference(key: str, claim: str, a: Sequence[float], b: Sequence[float], *, expect: Direction,
               what: str, seed: int) -> Finding:
    """The finding `mean(a) − mean(b)` (independent seeds), bootstrap within each group."""
    return Finding(key, claim, f"mean difference {what} ({len(a)} vs {len(b)} seeds)",
                   mean_difference(a, b), bootstrap(mean_difference, (a, b), seed, paired=False),
                   expect, details={"a": list(a), "b": list(b)})


def average(key: str, claim: str, values: Sequence[float], *, expect: Direction, null: float,
            what: str, seed: int) -> Finding:
    """The finding `mean(values)` (one value per seed) against `null`, bootstrap over the seeds."""
    return Finding(key, claim, f"mean {what} over {len(values)} seeds", float(np.mean(values)),
                   bootstrap(np.mean, (values,), seed), expect, null, details={"values": list(values)})


def maximum(key: str, claim: str, values: Sequence[float], *, expect: Direction, null: float,
            what: str, seed: int) -> Finding:
    """The finding `max(values)` (e.g. one value per layer and seed: a claim that every one of
    them is below `null`), bootstrap over the values. When every value is the same (e.g. all
    exactly 0) each resample's maximum is that value, so the interval is [value, value]
    (scipy refuses such degenerate resamples); with fewer than 3 values, (nan, nan) as always."""
    value = float(np.max(values))
    same = len(values) >= 3 and len(set(values)) == 1
    return Finding(key, claim, f"max {what} over {len(values)} values", value,
                   (value, value) if same else bootstrap(np.max, (values,), seed), expect, null,
                   details={"values": list(values)})


def withheld(finding: Finding, reason: str) -> Finding:
    """`finding` with no verdict (inconclusive): its interval (nan, nan) and `reason` in its
    details, for a run whose settings do not test the claim; its value is still reported."""
    finding.interval = (math.nan, math.nan)
    finding.details["reason"] = reason
    return finding


def log_findings(tracker: Tracker, findings: Sequence[Finding]) -> None:
    """On the parent run: `findings.json` (claim, statistic, value, interval, verdict, the
    numbers it came from), per finding the metrics `finding/<key>/value|low|high` and the tag
    `finding/<key>` = its verdict."""
    tracker.artifacts({"findings.json": json.dumps([f.as_dict() for f in findings], indent=1)})
    tracker.summary({f"finding/{f.key}/{part}": number for f in findings
                     for part, number in zip(("value", "low", "high"), (f.value, *f.interval))
                     if math.isfinite(number)})
    tracker.tags({f"finding/{f.key}": f.verdict for f in findings})
