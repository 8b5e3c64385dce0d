"""Summaries over seeds, paired differences and the minimum detectable effect.

Every measurement of :mod:`fairseq_meta.evaluation` gives one number per seed
(or per data draw) and per checkpoint. Here those numbers become

* :func:`summary`: mean, sample standard deviation (ddof 1), standard error and
  the two-sided 95% confidence interval of the mean from Student's t;
* :func:`paired`: the same for the per-seed differences to a baseline (only
  seeds both have), plus the separation (mean / standard error) and the
  minimum detectable effect of that comparison;
* :func:`pairs_for_effect`: how many pairs bring that minimum detectable effect
  down to a target (the instrument's calibration: how many seeds a verdict needs);
* :func:`minimum_detectable_effect`: the smallest true mean difference a paired
  two-sided t-test at level ``alpha`` detects with probability ``power``, given
  the standard deviation of the differences and the number of pairs. It is
  solved exactly with the noncentral t distribution (the textbook
  ``(z_{1-a/2} + z_{power}) sd / sqrt(n)`` is its large-n limit, and is too
  optimistic for 3-5 seeds).

A measurement without seeds (the probe on a fixed dev set) is summarised by a
paired bootstrap over dev examples instead: :func:`bootstrap_summary`.
"""
import math

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
MAX_PAIRS = 100_000  # pairs_for_effect looks no further


def _finite(values):
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def summary(values, alpha=ALPHA):
    """{n, mean, std, se, ci_low, ci_high} of ``values`` (non-finite dropped).

    ``std`` is the sample standard deviation (ddof 1); the interval is
    ``mean ± t_{1-alpha/2, n-1} se``. With one value std, se and the interval
    are None; with none, everything but n is None.
    """
    vals = _finite(values)
    n = len(vals)
    out = {"n": n, "mean": None, "std": None, "se": None, "ci_low": None, "ci_high": None}
    if not n:
        return out
    mean = sum(vals) / n
    out["mean"] = mean
    if n > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        # equal values whose float sum left a residue (an evaluation without
        # randomness, t = 0): no spread, not a separation of 1e16 standard errors
        if std <= 1e-12 * max(1.0, abs(mean)):
            std = 0.0
        se = std / math.sqrt(n)
        half = stats.t.ppf(1 - alpha / 2, n - 1) * se
        out.update(std=std, se=se, ci_low=mean - half, ci_high=mean + half)
    return out


def power_paired(effect, sd, n, alpha=ALPHA):
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs
    when the true mean difference is ``effect`` and its sd is ``sd``.

    T = (Z + delta) / sqrt(V / df) with Z standard normal, V chi-square(df),
    delta = effect sqrt(n) / sd; the power P(|T| > t_crit) is integrated over V
    (scipy's noncentral t loses precision for 1-2 degrees of freedom)."""
    from scipy import integrate

    if n < 2 or not sd > 0:
        raise ValueError("power needs n >= 2 pairs and sd > 0")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    delta = effect / sd * math.sqrt(n)

    def integrand(v):
        s = math.sqrt(v / df)
        return (stats.norm.sf(crit * s - delta) + stats.norm.cdf(-crit * s - delta)) * stats.chi2.pdf(v, df)

    # V outside its 1e-12 tails contributes nothing measurable
    lo, hi = stats.chi2.ppf(1e-12, df), stats.chi2.isf(1e-12, df)
    value, _ = integrate.quad(integrand, lo, hi, limit=200)
    return float(value)


def minimum_detectable_effect(sd, n, alpha=ALPHA, power=POWER):
    """The smallest mean difference (in the units of ``sd``) that a two-sided
    paired t-test with ``n`` pairs detects with probability ``power``.

    None when it cannot be computed (fewer than 2 pairs); 0 when ``sd`` is 0
    (the differences do not vary: any non-zero effect is certain).
    """
    if sd is None or n is None or n < 2 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 0.0
    # power grows monotonically with the effect; bracket and solve in sd units
    f = lambda d: power_paired(d, 1.0, n, alpha) - power  # noqa: E731
    hi = 1.0
    while f(hi) < 0:
        hi *= 2
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-10)) * sd


def pairs_for_effect(sd, effect, alpha=ALPHA, power=POWER, max_n=MAX_PAIRS):
    """The fewest pairs (≥ 2) whose :func:`minimum_detectable_effect` for ``sd`` is at
    most ``effect``; None when ``sd`` is undefined or more than ``max_n`` are needed."""
    if sd is None or not math.isfinite(sd) or effect is None or effect <= 0:
        return None
    if minimum_detectable_effect(sd, max_n, alpha, power) > effect:
        return None
    lo, hi = 1, max_n  # the effect decreases with n: MDE(lo) > effect >= MDE(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if minimum_detectable_effect(sd, mid, alpha, power) <= effect:
            hi = mid
        else:
            lo = mid
    return hi


def normal_mde(se, alpha=ALPHA, power=POWER):
    """``(z_{1-alpha/2} + z_{power}) se``: the detectable effect when the
    standard error is known (bootstrap)."""
    if se is None:
        return None
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


def paired(values, baseline, alpha=ALPHA, power=POWER, target=None):
    """Paired comparison of two {seed: value} maps over the seeds both have:
    :func:`summary` of the differences (value - baseline) plus ``seeds``,
    ``wins`` (differences > 0), ``separation`` (mean / se; None when se is 0 or
    undefined) and ``mde`` (:func:`minimum_detectable_effect` for this sd and n);
    with a ``target`` effect also ``n_for_target`` (:func:`pairs_for_effect`)."""
    seeds = [s for s in values if s in baseline and _finite([values[s], baseline[s]]) and
             len(_finite([values[s], baseline[s]])) == 2]
    diffs = [float(values[s]) - float(baseline[s]) for s in seeds]
    out = summary(diffs, alpha)
    out["seeds"] = [str(s) for s in seeds]
    out["wins"] = sum(d > 0 for d in diffs)
    se = out["se"]
    out["separation"] = out["mean"] / se if se else None
    out["mde"] = minimum_detectable_effect(out["std"], out["n"], alpha, power)
    if target is not None:
        out["target"] = target
        out["n_for_target"] = pairs_for_effect(out["std"], target, alpha, power)
    return out


def bootstrap_indices(n_examples, n_boot, seed=0):
    """``n_boot`` resamples (with replacement) of ``range(n_examples)``, the same
    for every checkpoint so bootstrap differences are paired."""
    rng = np.random.RandomState(seed)
    return rng.randint(0, n_examples, size=(n_boot, n_examples))


def bootstrap_summary(score_fn, indices, alpha=ALPHA):
    """{estimate, se, ci_low, ci_high} from bootstrap resamples: ``score_fn(idx)``
    scores the examples ``idx``; the interval is the percentile interval."""
    scores = np.array([score_fn(idx) for idx in indices], dtype=float)
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return {"se": None, "ci_low": None, "ci_high": None, "n_boot": 0}
    lo, hi = np.percentile(scores, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"se": float(scores.std(ddof=1)) if len(scores) > 1 else None,
            "ci_low": float(lo), "ci_high": float(hi), "n_boot": int(len(scores))}
