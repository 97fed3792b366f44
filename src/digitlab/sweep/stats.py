"""Statistics a careful reader trusts: summaries over seeds and paired comparisons.

Numbers in, numbers out (plain floats; None where a figure does not exist, e.g. a standard
deviation of one run). The interval is Student's t interval for a mean, and the paired test is
scipy's Wilcoxon signed-rank test (no normality assumption) with the paired t test beside it;
both are standard (e.g. Dietterich 1998, "Approximate statistical tests for comparing
supervised classification learning algorithms"; Demšar 2006, JMLR 7).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return x[np.isfinite(x)]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple | None:
    """Student's t interval (low, high) for the mean of `values`; None for fewer than 2."""
    x = _finite(values)
    if len(x) < 2:
        return None
    mean, sem = float(x.mean()), float(x.std(ddof=1)) / math.sqrt(len(x))
    half = float(sps.t.ppf(0.5 + confidence / 2, len(x) - 1)) * sem
    return (mean - half, mean + half)


def summarize(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> dict:
    """n, mean, std (ddof=1), min, max and the t interval of the mean, over finite values.

    `bounds`: the values the figure can take (an accuracy's [0, 1]); the interval is clipped
    to them (with 2 seeds the t interval is wide: 0.88 and 1.0 gave 0.75-1.007).
    Returns: {"n", "mean", "std", "min", "max", "ci_low", "ci_high"} (floats; None where the
    figure needs more values: everything for 0 values, std and the interval for 1), plus
    "ci_clipped" (whether the t interval reached past `bounds` and was cut there) and
    "ci_unclipped" ([low, high] of the t interval as computed, or None): a bound at exactly
    1.0 was otherwise indistinguishable from a computed one.
    """
    x = _finite(values)
    out: dict = {"n": len(x)}
    if not len(x):
        return {
            **out,
            **dict.fromkeys(("mean", "std", "min", "max", "ci_low", "ci_high")),
            "ci_clipped": False,
            "ci_unclipped": None,
        }
    raw = t_interval(x, confidence)
    ci = (float(max(raw[0], bounds[0])), float(min(raw[1], bounds[1]))) if raw else None
    out.update(
        mean=float(x.mean()),
        std=float(x.std(ddof=1)) if len(x) > 1 else None,
        min=float(x.min()),
        max=float(x.max()),
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        ci_clipped=ci is not None and ci != raw,
        ci_unclipped=list(raw) if raw is not None else None,
    )
    return out


CLIPPED_NOTE = "clipped to the metric's range"


def interval_text(s: dict, dash: str = "-", note: str = CLIPPED_NOTE) -> str | None:
    """The interval of summary `s` as "0.9195-1.0000", with ", `note`" when it was clipped
    to the figure's range (a bound cut at 1.0 is not what the t interval gave, and a reader
    must not take it for one); None when `s` has no interval. `s` may come from an older
    sweep.json without "ci_clipped" (then it is shown as not clipped)."""
    if s.get("ci_low") is None or s.get("ci_high") is None:
        return None
    text = f"{s['ci_low']:.4f}{dash}{s['ci_high']:.4f}"
    return f"{text}, {note}" if s.get("ci_clipped") else text


def chosen_line(summary: dict, best: dict) -> str:
    """The line `digitlab sweep` prints for the chosen configuration `best` (a config of
    `results.aggregate`) of sweep `summary`: its settings, mean objective with its interval
    (saying when that was clipped), and the test figure beside it."""
    o, t = best["objective"], best["test"]
    ci = interval_text(o)
    settings = ", ".join(f"{k}={v}" for k, v in best["settings"].items()) or "base"
    line = f"chosen on validation: {settings}: {summary['metric']} {o['mean']:.4f}"
    if ci is not None:
        line += f" (95% CI {ci})"
    if summary.get("test_metric") and t["mean"] is not None:
        line += f"; {summary['test_metric']} {t['mean']:.4f} (test, not used to choose)"
    return line


def paired(
    a: Sequence[float], b: Sequence[float], mode: str = "max", confidence: float = CONFIDENCE
) -> dict:
    """Compare A with B on the same seeds (a[i] and b[i] come from seed i).

    Returns the mean difference A - B with its t interval, how often A was better (`wins`,
    in the direction of `mode`: higher for "max", lower for "min"), ties and losses out of n,
    and the two-sided p-values of scipy's Wilcoxon signed-rank test and paired t test (None
    when they cannot be computed: fewer than 2 pairs, or every difference zero).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {len(x)} and {len(y)}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = x - y
    sign = 1.0 if mode == "max" else -1.0
    out = {
        "n": len(d),
        "mean_diff": float(d.mean()) if len(d) else None,
        "wins": int(np.sum(sign * d > 0)),
        "ties": int(np.sum(d == 0)),
        "losses": int(np.sum(sign * d < 0)),
        "ci_low": None,
        "ci_high": None,
        "wilcoxon_p": None,
        "ttest_p": None,
    }
    if len(d) < 2:
        return out
    ci = t_interval(d, confidence)
    out["ci_low"], out["ci_high"] = ci if ci else (None, None)
    if np.any(d != 0):
        with warnings.catch_warnings():
            # Small samples: scipy warns that the exact/normal approximation is rough; the
            # p-value is still the one it documents, and the report shows n beside it.
            warnings.simplefilter("ignore")
            out["wilcoxon_p"] = float(sps.wilcoxon(x, y).pvalue)
            if np.std(d) > 0:
                out["ttest_p"] = float(sps.ttest_rel(x, y).pvalue)
    return out
