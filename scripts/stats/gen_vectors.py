#!/usr/bin/env python3
"""Reference vectors for serin's Mann-Whitney / Hodges-Lehmann code.

U and p-values come from SciPy's mannwhitneyu (asymptotic, continuity-corrected); the
Hodges-Lehmann estimate from NumPy; the confidence interval from an independent port of
R's wilcox.test(conf.int=TRUE, correct=TRUE, exact=FALSE) that uses scipy.optimize.brentq.

Usage: python3 scripts/stats/gen_vectors.py > tests/vectors/mann_whitney.json
"""
import json
import sys

import numpy as np
import scipy
from scipy import optimize, stats


def wdiff(x, y, d, zq):
    """R's wdiff for the two-sided, continuity-corrected case."""
    nx, ny = len(x), len(y)
    dr = stats.rankdata(np.concatenate([x - d, y]))
    _, counts = np.unique(dr, return_counts=True)
    dz = dr[:nx].sum() - nx * (nx + 1) / 2 - nx * ny / 2
    corr = np.sign(dz) * 0.5
    sigma = np.sqrt((nx * ny / 12) * ((nx + ny + 1) - (counts**3 - counts).sum() / ((nx + ny) * (nx + ny - 1))))
    if sigma == 0:
        raise ValueError("all observations tied")
    return (dz - corr) / sigma - zq


def root(x, y, zq):
    mumin, mumax = x.min() - y.max(), x.max() - y.min()
    flo, fhi = wdiff(x, y, mumin, zq), wdiff(x, y, mumax, zq)
    if flo <= 0:
        return mumin
    if fhi >= 0:
        return mumax
    return optimize.brentq(lambda d: wdiff(x, y, d, zq), mumin, mumax, xtol=1e-13, rtol=4 * np.finfo(float).eps, maxiter=2000)


def conf_int(x, y, conf):
    alpha = 1 - conf
    return root(x, y, stats.norm.ppf(alpha / 2, loc=0, scale=1) * -1), root(x, y, stats.norm.ppf(alpha / 2))


def case(name, x, y, conf=0.95):
    x, y = np.asarray(x, float), np.asarray(y, float)
    out = {"name": name, "x": x.tolist(), "y": y.tolist(), "confidence": conf}
    for alt in ("two-sided", "greater", "less"):
        r = stats.mannwhitneyu(x, y, use_continuity=True, alternative=alt, method="asymptotic")
        out["u"] = float(r.statistic)
        out["p_" + alt.replace("-", "_")] = float(r.pvalue)
    out["hl_estimate"] = float(np.median(np.subtract.outer(x, y).ravel()))
    lo, hi = conf_int(x, y, conf)
    out["ci_lower"], out["ci_upper"] = float(lo), float(hi)
    return out


def main():
    rng = np.random.default_rng(20240601)
    cases = [
        case("small_distinct", [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30], [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]),
        case("ties_integers", [1, 2, 2, 3, 3, 3, 4, 5], [2, 3, 3, 4, 4, 5, 5, 6, 7]),
        case("identical_samples", [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]),
        case("identical_shuffled", [5, 3, 1, 2, 4], [1, 2, 3, 4, 5], 0.98),
        case("unequal_sizes", [10.1, 12.3, 9.8, 11.0], [8.0, 8.5, 9.1, 7.7, 8.8, 9.9, 8.2, 7.1, 9.0, 8.4, 8.6]),
        case("single_vs_many", [5.0], [1.0, 2.0, 3.0, 4.0, 6.0]),
        case("complete_separation", [10, 11, 12, 13, 14], [1, 2, 3, 4, 5], 0.9),
        case("mostly_zero_error_rates", [0, 0, 0, 0.04, 0, 0, 0.08, 0, 0, 0, 0.04, 0], [0, 0, 0.02, 0, 0, 0, 0, 0.02, 0, 0, 0, 0]),
        case("negative_values", [-3.2, -1.1, -2.5, -0.4, -1.9, -2.2], [-1.0, 0.3, -0.2, 0.8, -0.6, 0.1, 0.5]),
        case("two_values_each", [1.0, 2.0], [1.5, 3.0]),
        case("constant_vs_spread", [4, 4, 4, 4, 4], [1, 3, 4, 5, 6, 7]),
        case("latency_shift_98", (rng.lognormal(np.log(45), 0.5, 40)).round(3).tolist(), (rng.lognormal(np.log(37.5), 0.5, 40)).round(3).tolist(), 0.98),
        case("latency_null_98", (rng.lognormal(np.log(37.5), 0.5, 25)).round(3).tolist(), (rng.lognormal(np.log(37.5), 0.5, 30)).round(3).tolist(), 0.98),
        case("normal_large_99", rng.normal(0.3, 1, 120).round(4).tolist(), rng.normal(0, 1, 100).round(4).tolist(), 0.99),
        case("heavy_ties_rounded", rng.normal(1, 1, 50).round(0).tolist(), rng.normal(0, 1, 60).round(0).tolist(), 0.95),
        case("canary_lower", rng.normal(-2, 1, 20).round(2).tolist(), rng.normal(0, 1, 20).round(2).tolist(), 0.8),
        case("odd_even_sizes", [3.1, 4.1, 5.9, 2.6, 5.3, 5.8, 9.7], [9.3, 2.3, 8.4, 6.2, 6.4, 3.3, 8.3, 2.7], 0.95),
        case("scaled_large_values", (rng.normal(1e6, 5e4, 15)).round(1).tolist(), (rng.normal(1.02e6, 5e4, 18)).round(1).tolist(), 0.95),
        case("tiny_values", (rng.normal(0.005, 0.001, 12)).round(6).tolist(), (rng.normal(0.0052, 0.001, 12)).round(6).tolist(), 0.98),
        case("many_duplicates_both", [1, 1, 1, 2, 2, 2, 2, 3], [1, 2, 2, 3, 3, 3, 3, 3, 4], 0.9),
        case("one_outlier", [1.0, 1.1, 0.9, 1.05, 50.0], [1.0, 1.02, 0.98, 1.01, 0.99, 1.03], 0.95),
    ]
    doc = {
        "generator": "scripts/stats/gen_vectors.py",
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "notes": "u is U of x (canary); p_* from scipy.stats.mannwhitneyu(method='asymptotic', use_continuity=True); hl_estimate is numpy median of x_i - y_j; ci_* from a brentq port of R wilcox.test(conf.int=TRUE, correct=TRUE, exact=FALSE).",
        "cases": cases,
    }
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
