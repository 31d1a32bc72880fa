//! Sequential early decisions from cumulative request counts.
//!
//! The test compares the canary's per-request failure probability with the primary's
//! (failures are errors, or requests slower than a fixed histogram bucket bound). It uses
//! only the totals since the analysis started, so a restarted controller that re-reads them
//! from Prometheus reaches the same decision, and it may be evaluated as often as wanted:
//! the false-rollback rate holds under continuous monitoring (Ville's inequality). See
//! `docs/statistics.md` for the derivation and the assumptions.

/// Settings of the sequential test; opt-in per Canary.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SequentialConfig {
    /// Probability bound of rolling back a canary that is not worse than the primary,
    /// however often the test is evaluated (also bounds wrongly promoting early a canary
    /// that is worse by `max_ratio_h1` or more).
    pub false_rollback_rate: f64,
    /// No decision before both canary and primary have served this many requests.
    pub min_requests: u64,
    /// Also decide to promote early when the evidence says the canary is not regressed.
    pub promote_early: bool,
    /// The regression to detect: canary failure probability `max_ratio_h1` times the
    /// primary's (2.0: twice as many failures).
    pub max_ratio_h1: f64,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        Self {
            false_rollback_rate: 0.01,
            min_requests: 200,
            promote_early: false,
            max_ratio_h1: 2.0,
        }
    }
}

/// Cumulative counts since the analysis started. Floats, because Prometheus `increase()`
/// extrapolates; `bad` is errors, or requests above a latency bucket bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Requests served by the canary.
    pub canary_total: f64,
    /// Failed (or slow) requests among them.
    pub canary_bad: f64,
    /// Requests served by the primary over the same time.
    pub primary_total: f64,
    /// Failed (or slow) requests among them.
    pub primary_bad: f64,
}

/// What the sequential test says now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "decision")]
pub enum SequentialDecision {
    /// Not enough evidence either way (or too few requests, or invalid counts).
    Continue,
    /// The canary fails more often than the primary.
    Rollback {
        /// The e-value (likelihood ratio against the best null); at least `1 / false_rollback_rate`.
        evidence: f64,
        /// One readable sentence for an event.
        reason: String,
    },
    /// The canary is not regressed by `max_ratio_h1` (only with `promote_early`).
    Promote {
        /// The e-value against "regressed by `max_ratio_h1` or more".
        evidence: f64,
        /// One readable sentence for an event.
        reason: String,
    },
}

/// Both e-values, for logging while the decision is still `Continue`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Evidence {
    /// Evidence that the canary is worse than the primary.
    pub rollback: f64,
    /// Evidence that the canary is not worse by `max_ratio_h1` or more.
    pub promote: f64,
}

/// Grid of baseline failure probabilities the mixture spreads its prior over: 1e-5 to 0.5
/// in steps of 25%, equal weights.
fn baseline_grid() -> impl Iterator<Item = f64> {
    (0..)
        .map(|k| 1e-5 * 1.25f64.powi(k))
        .take_while(|&q| q <= 0.5)
}

/// `b ln p + (n - b) ln(1 - p)`, with `0 ln 0 = 0`.
fn bernoulli_ll(bad: f64, total: f64, p: f64) -> f64 {
    let good = total - bad;
    let a = if bad > 0.0 { bad * p.ln() } else { 0.0 };
    let b = if good > 0.0 { good * (-p).ln_1p() } else { 0.0 };
    a + b
}

fn ll(c: &Counts, p_canary: f64, p_primary: f64) -> f64 {
    bernoulli_ll(c.canary_bad, c.canary_total, p_canary)
        + bernoulli_ll(c.primary_bad, c.primary_total, p_primary)
}

/// `ln Σ_k w_k exp(ℓ(ratio·q_k, q_k))`: the log mixture likelihood of "canary fails `ratio`
/// times as often as the primary", over the baseline grid.
fn log_mixture(c: &Counts, ratio: f64) -> f64 {
    let terms: Vec<f64> = baseline_grid()
        .map(|q| {
            if ratio * q < 1.0 {
                ll(c, ratio * q, q)
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    max + (sum / terms.len() as f64).ln()
}

/// `max ℓ(ratio·p, p)` over `0 <= p <= min(1, 1/ratio)`: the likelihood on the boundary of
/// the null. ℓ is concave in `p`, so bisect on its derivative.
fn boundary_max(c: &Counts, ratio: f64) -> f64 {
    let bad = c.canary_bad + c.primary_bad;
    if bad <= 0.0 {
        return ll(c, 0.0, 0.0);
    }
    let derivative = |p: f64| {
        bad / p
            - ratio * (c.canary_total - c.canary_bad) / (1.0 - ratio * p)
            - (c.primary_total - c.primary_bad) / (1.0 - p)
    };
    let (mut lo, mut hi) = (0.0, 1.0f64.min(1.0 / ratio));
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if derivative(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    ll(c, ratio * lo, lo)
}

fn valid(c: &Counts) -> bool {
    let ok = |total: f64, bad: f64| {
        total.is_finite() && bad.is_finite() && total >= 0.0 && bad >= 0.0 && bad <= total
    };
    ok(c.canary_total, c.canary_bad) && ok(c.primary_total, c.primary_bad)
}

/// Computes both e-values from cumulative counts (1 when the counts are invalid).
///
/// Rollback: mixture over the baseline of "canary = `max_ratio_h1` × primary", divided by
/// the maximum likelihood under "canary <= primary". Promote: mixture of "canary = primary"
/// divided by the maximum likelihood under "canary >= `max_ratio_h1` × primary".
pub fn evidence(counts: &Counts, cfg: &SequentialConfig) -> Evidence {
    if !valid(counts) || cfg.max_ratio_h1.is_nan() || cfg.max_ratio_h1 <= 1.0 {
        return Evidence {
            rollback: 1.0,
            promote: 1.0,
        };
    }
    let c = counts;
    let r = cfg.max_ratio_h1;
    let rate = |bad: f64, total: f64| if total > 0.0 { bad / total } else { 0.0 };
    let (pc, pp) = (
        rate(c.canary_bad, c.canary_total),
        rate(c.primary_bad, c.primary_total),
    );
    let unrestricted = ll(c, pc, pp);

    let null_not_worse = if pc <= pp {
        unrestricted
    } else {
        boundary_max(c, 1.0)
    };
    let rollback = (log_mixture(c, r) - null_not_worse).min(700.0).exp();

    let null_regressed = if pc >= r * pp {
        unrestricted
    } else {
        boundary_max(c, r)
    };
    let promote = (log_mixture(c, 1.0) - null_regressed).min(700.0).exp();
    Evidence { rollback, promote }
}

/// Decides from cumulative counts: roll back, promote early (if enabled), or continue.
///
/// Rolls back when the rollback e-value reaches `1 / false_rollback_rate`. With
/// `promote_early`, promotes when the promote e-value reaches the same level. Nothing is
/// decided before both sides have `min_requests` requests, nor from invalid counts
/// (negative, non-finite, or more bad than total).
pub fn decide(counts: &Counts, cfg: &SequentialConfig) -> SequentialDecision {
    let min = cfg.min_requests as f64;
    if !valid(counts) || counts.canary_total < min || counts.primary_total < min {
        return SequentialDecision::Continue;
    }
    let alpha = cfg.false_rollback_rate;
    if !(alpha > 0.0 && alpha < 1.0) {
        return SequentialDecision::Continue;
    }
    let threshold = 1.0 / alpha;
    let e = evidence(counts, cfg);
    let rates = format!(
        "canary {} of {} requests ({:.2}%), primary {} of {} ({:.2}%)",
        counts.canary_bad.round(),
        counts.canary_total.round(),
        100.0 * counts.canary_bad / counts.canary_total,
        counts.primary_bad.round(),
        counts.primary_total.round(),
        100.0 * counts.primary_bad / counts.primary_total,
    );
    if e.rollback >= threshold {
        return SequentialDecision::Rollback {
            evidence: e.rollback,
            reason: format!(
                "canary fails more often than primary: {rates}; evidence {:.0} >= {threshold:.0}",
                e.rollback
            ),
        };
    }
    if cfg.promote_early && e.promote >= threshold {
        return SequentialDecision::Promote {
            evidence: e.promote,
            reason: format!(
                "canary is not {}x worse than primary: {rates}; evidence {:.0} >= {threshold:.0}",
                cfg.max_ratio_h1, e.promote
            ),
        };
    }
    SequentialDecision::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::rng::Rng;

    fn counts(cn: f64, cb: f64, pn: f64, pb: f64) -> Counts {
        Counts {
            canary_total: cn,
            canary_bad: cb,
            primary_total: pn,
            primary_bad: pb,
        }
    }

    #[test]
    fn too_few_requests_continue() {
        let c = counts(100.0, 50.0, 1000.0, 1.0);
        assert_eq!(
            decide(&c, &SequentialConfig::default()),
            SequentialDecision::Continue
        );
    }

    #[test]
    fn invalid_counts_continue() {
        let cfg = SequentialConfig::default();
        for c in [
            counts(1000.0, 1001.0, 1000.0, 1.0),
            counts(f64::NAN, 1.0, 1000.0, 1.0),
            counts(1000.0, -1.0, 1000.0, 1.0),
        ] {
            assert_eq!(decide(&c, &cfg), SequentialDecision::Continue);
        }
    }

    #[test]
    fn a_clear_regression_rolls_back() {
        let c = counts(1000.0, 50.0, 9000.0, 45.0);
        match decide(&c, &SequentialConfig::default()) {
            SequentialDecision::Rollback { evidence, reason } => {
                assert!(evidence >= 100.0);
                assert!(
                    reason.contains("canary 50 of 1000 requests (5.00%)"),
                    "{reason}"
                );
            }
            other => panic!("expected rollback, got {other:?}"),
        }
    }

    #[test]
    fn a_canary_better_than_primary_never_rolls_back() {
        let c = counts(5000.0, 0.0, 5000.0, 100.0);
        assert!(evidence(&c, &SequentialConfig::default()).rollback <= 1.0);
    }

    #[test]
    fn a_long_healthy_run_promotes_early_only_when_enabled() {
        let c = counts(20_000.0, 100.0, 40_000.0, 200.0);
        let mut cfg = SequentialConfig::default();
        assert_eq!(decide(&c, &cfg), SequentialDecision::Continue);
        cfg.promote_early = true;
        assert!(matches!(
            decide(&c, &cfg),
            SequentialDecision::Promote { .. }
        ));
    }

    #[test]
    fn no_failures_at_all_is_not_evidence_of_a_regression() {
        let c = counts(10_000.0, 0.0, 10_000.0, 0.0);
        assert!(evidence(&c, &SequentialConfig::default()).rollback <= 1.0);
    }

    /// Runs `releases` healthy releases (same failure probability on both sides) with the
    /// canary share stepping 10%..50% every minute, evaluates the test every `every`
    /// seconds for ten minutes from cumulative counts, and returns how many were rolled
    /// back.
    fn healthy_rollbacks(
        releases: usize,
        p: f64,
        cfg: &SequentialConfig,
        seed: u64,
        every: u32,
    ) -> usize {
        let mut rng = Rng::new(seed);
        let mut rolled_back = 0;
        for _ in 0..releases {
            let mut c = Counts::default();
            'release: for second in 0..600u32 {
                let share = (0.1 * (1 + second / 60).min(5) as f64).min(0.5);
                for _ in 0..50 {
                    let failed = rng.bernoulli(p);
                    if rng.bernoulli(share) {
                        c.canary_total += 1.0;
                        c.canary_bad += f64::from(u8::from(failed));
                    } else {
                        c.primary_total += 1.0;
                        c.primary_bad += f64::from(u8::from(failed));
                    }
                }
                if second % every == every - 1
                    && matches!(decide(&c, cfg), SequentialDecision::Rollback { .. })
                {
                    rolled_back += 1;
                    break 'release;
                }
            }
        }
        rolled_back
    }

    #[test]
    fn false_rollback_rate_holds_under_continuous_monitoring() {
        // Property test: the empirical rate must not exceed alpha beyond binomial noise
        // (three standard deviations), at two alphas and two baseline failure rates.
        let releases = 300;
        for (alpha, p, seed) in [(0.05, 0.02, 7), (0.01, 0.005, 11)] {
            let cfg = SequentialConfig {
                false_rollback_rate: alpha,
                min_requests: 50,
                ..SequentialConfig::default()
            };
            let n = healthy_rollbacks(releases, p, &cfg, seed, 5) as f64;
            let expected = alpha * releases as f64;
            let bound = expected + 3.0 * (expected * (1.0 - alpha)).sqrt();
            assert!(
                n <= bound,
                "alpha {alpha}: {n} of {releases} rolled back (bound {bound:.1})"
            );
        }
    }

    #[test]
    fn false_rollback_rate_holds_when_evaluated_at_every_look() {
        // The controller evaluates at every reconcile (every evaluationInterval, and at
        // every watch event in between): the rate must hold however often it looks, here
        // at every second, which is every new scrape of the counters. Same bound as above.
        let releases = 300;
        for (alpha, p, seed) in [(0.05, 0.02, 13), (0.01, 0.005, 17)] {
            let cfg = SequentialConfig {
                false_rollback_rate: alpha,
                min_requests: 50,
                ..SequentialConfig::default()
            };
            let every_look = healthy_rollbacks(releases, p, &cfg, seed, 1);
            let every_5s = healthy_rollbacks(releases, p, &cfg, seed, 5);
            let expected = alpha * releases as f64;
            let bound = expected + 3.0 * (expected * (1.0 - alpha)).sqrt();
            println!(
                "alpha {alpha}: {every_look} of {releases} rolled back evaluated every second, {every_5s} every 5 s"
            );
            assert!(
                every_look as f64 <= bound,
                "alpha {alpha}: {every_look} of {releases} rolled back (bound {bound:.1})"
            );
            // Looking more often can only find a crossing sooner, never miss one.
            assert!(every_look >= every_5s);
        }
    }
}
