//! Decision benchmark: Flagger's fixed-threshold policy against serin's statistical ones.
//!
//! Simulates releases at 50 requests per second split by the canary weight (baseline 0.5%
//! errors, log-normal latency with p99 = 120 ms), under a healthy canary and under error
//! and latency regressions, and measures what users pay before each policy decides. Fully
//! deterministic for a seed: every release draws from its own seeded stream, shared by the
//! policies (common random numbers).

use super::rng::Rng;
use crate::analysis::counts::{Decision, evaluate};
use crate::analysis::stats::{
    Classification, CompareConfig, NoDataPolicy, Outcome, ScoreThresholds, compare, score,
};
use crate::api::{CounterReadings, WorkloadCounters};

/// Requests per second reaching the service (canary + primary).
pub const RPS: u32 = 50;
/// Baseline per-request error probability.
pub const BASE_ERROR_RATE: f64 = 0.005;
/// Baseline p99 latency in milliseconds.
pub const BASE_P99_MS: f64 = 120.0;
/// Log-normal shape of the latency; the median follows from the p99.
const LATENCY_SIGMA: f64 = 0.5;
/// z(0.99), to calibrate the median from the p99.
const Z99: f64 = 2.326_347_874_040_841;
/// Histogram bucket bounds (ms) as Istio exports them; the last bucket is +Inf.
const BUCKETS_MS: [f64; 11] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
/// Bucket bound the sequential latency test counts slow requests against.
pub const SLOW_BUCKET_MS: f64 = 100.0;
/// What the report counts as a slow request users notice.
pub const USER_SLOW_MS: f64 = 250.0;
/// Analysis interval, window, step and limits of Flagger's policy.
const INTERVAL_S: u32 = 60;
const STEP_WEIGHT: f64 = 0.10;
const MAX_WEIGHT: f64 = 0.50;
const THRESHOLD: u32 = 5;
const MIN_SUCCESS_RATE: f64 = 99.0;
const MAX_P99_MS: f64 = 500.0;
/// Seconds between sequential evaluations, and the length of one Mann-Whitney slice.
const SEQUENTIAL_EVERY_S: u32 = 5;
const SLICE_S: usize = 5;
/// Hard stop of a simulated release (never reached by these policies).
const MAX_SECONDS: u32 = 3600;

/// One simulated condition of the canary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// Name in the report.
    pub name: &'static str,
    /// Canary error probability as a multiple of the baseline.
    pub error_factor: f64,
    /// Canary latency as a multiple of the baseline (every request is slower by it).
    pub latency_factor: f64,
}

/// The scenarios of the report: healthy, error rate x2/x5/x20, latency +20%/+100%.
pub fn scenarios() -> Vec<Scenario> {
    let s = |name, error_factor, latency_factor| Scenario {
        name,
        error_factor,
        latency_factor,
    };
    vec![
        s("healthy", 1.0, 1.0),
        s("errors x2", 2.0, 1.0),
        s("errors x5", 5.0, 1.0),
        s("errors x20", 20.0, 1.0),
        s("latency +20%", 1.0, 1.2),
        s("latency +100%", 1.0, 2.0),
    ]
}

/// A decision policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Flagger: success rate >= 99% and p99 <= 500 ms over the last minute, every minute;
    /// step 10% to 50%; roll back at 5 failed checks.
    Flagger,
    /// Flagger's stepping and checks, plus the Mann-Whitney judgement per interval and the
    /// controller's sequential test (errors and the 100 ms bucket) every 5 s, between the
    /// ticks, for early rollback.
    Serin,
    /// As `Serin`, with `promoteEarly`: a passed tick with enough evidence for the canary
    /// skips the remaining steps.
    SerinEarlyPromotion,
}

impl Policy {
    /// All policies, in report order.
    pub const ALL: [Policy; 3] = [Policy::Flagger, Policy::Serin, Policy::SerinEarlyPromotion];

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Flagger => "flagger",
            Policy::Serin => "serin",
            Policy::SerinEarlyPromotion => "serin+early-promote",
        }
    }
}

/// Benchmark settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchConfig {
    /// Seed of the whole run.
    pub seed: u64,
    /// Healthy releases per policy (false-rollback rate); regressions run a fifth of it
    /// (at least 20).
    pub releases: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            releases: 1000,
        }
    }
}

/// Aggregated result of one scenario under one policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: &'static str,
    /// Policy name.
    pub policy: &'static str,
    /// Simulated releases.
    pub releases: usize,
    /// Fraction of releases rolled back.
    pub rolled_back: f64,
    /// Mean seconds from the start of the analysis to the decision.
    pub decision_s: f64,
    /// Mean failed requests the canary served before the decision.
    pub canary_errors: f64,
    /// Mean canary requests slower than 250 ms before the decision.
    pub canary_slow: f64,
    /// Mean seconds to promote, over the promoted releases.
    pub promote_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Second {
    requests: u32,
    errors: u32,
    slow: u32,
    user_slow: u32,
    latency_sum: f64,
    buckets: [u32; BUCKETS_MS.len() + 1],
}

#[derive(Debug, Clone, Copy)]
struct ReleaseOutcome {
    rolled_back: bool,
    decided_at: u32,
    canary_errors: u32,
    canary_slow: u32,
}

/// Traffic generator of one release.
struct Traffic {
    rng: Rng,
    scenario: Scenario,
    log_median: f64,
}

impl Traffic {
    fn new(seed: u64, scenario: Scenario) -> Self {
        Self {
            rng: Rng::new(seed),
            scenario,
            log_median: BASE_P99_MS.ln() - Z99 * LATENCY_SIGMA,
        }
    }

    /// One second of traffic at canary weight `weight`: (canary, primary).
    fn second(&mut self, weight: f64) -> (Second, Second) {
        let (mut canary, mut primary) = (Second::default(), Second::default());
        for _ in 0..RPS {
            // Always draw the same three numbers per request so that policies that diverge
            // in weight still see aligned random streams.
            let to_canary = self.rng.uniform() < weight;
            let u_error = self.rng.uniform();
            let z = self.rng.normal();
            let (side, error_rate, latency_factor) = if to_canary {
                let s = &self.scenario;
                (
                    &mut canary,
                    BASE_ERROR_RATE * s.error_factor,
                    s.latency_factor,
                )
            } else {
                (&mut primary, BASE_ERROR_RATE, 1.0)
            };
            let latency = (self.log_median + LATENCY_SIGMA * z).exp() * latency_factor;
            side.requests += 1;
            side.errors += u32::from(u_error < error_rate);
            side.slow += u32::from(latency > SLOW_BUCKET_MS);
            side.user_slow += u32::from(latency > USER_SLOW_MS);
            side.latency_sum += latency;
            let bucket = BUCKETS_MS
                .iter()
                .position(|&b| latency <= b)
                .unwrap_or(BUCKETS_MS.len());
            side.buckets[bucket] += 1;
        }
        (canary, primary)
    }
}

/// Prometheus' `histogram_quantile` over per-bucket (not cumulative) counts.
fn histogram_quantile(q: f64, buckets: &[u32]) -> f64 {
    let total: u32 = buckets.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    let rank = q * f64::from(total);
    let mut cumulative = 0.0;
    for (i, &count) in buckets.iter().enumerate() {
        let before = cumulative;
        cumulative += f64::from(count);
        if cumulative >= rank {
            if i == BUCKETS_MS.len() {
                return BUCKETS_MS[BUCKETS_MS.len() - 1];
            }
            let lower = if i == 0 { 0.0 } else { BUCKETS_MS[i - 1] };
            let upper = BUCKETS_MS[i];
            return lower + (upper - lower) * (rank - before) / f64::from(count);
        }
    }
    BUCKETS_MS[BUCKETS_MS.len() - 1]
}

/// Flagger's builtin checks on the canary over a window of seconds.
fn threshold_checks_pass(window: &[Second]) -> bool {
    let requests: u32 = window.iter().map(|s| s.requests).sum();
    if requests == 0 {
        return false; // no data, no promotion
    }
    let errors: u32 = window.iter().map(|s| s.errors).sum();
    let success_rate = 100.0 * (1.0 - f64::from(errors) / f64::from(requests));
    let mut buckets = [0u32; BUCKETS_MS.len() + 1];
    for s in window {
        for (b, c) in buckets.iter_mut().zip(s.buckets) {
            *b += c;
        }
    }
    success_rate >= MIN_SUCCESS_RATE && histogram_quantile(0.99, &buckets) <= MAX_P99_MS
}

/// Per-slice error rates and mean latencies of a window (NaN for an empty slice).
fn slices(window: &[Second]) -> (Vec<f64>, Vec<f64>) {
    window
        .chunks(SLICE_S)
        .map(|chunk| {
            let requests: u32 = chunk.iter().map(|s| s.requests).sum();
            let errors: u32 = chunk.iter().map(|s| s.errors).sum();
            let latency: f64 = chunk.iter().map(|s| s.latency_sum).sum();
            let n = f64::from(requests);
            if requests == 0 {
                (f64::NAN, f64::NAN)
            } else {
                (f64::from(errors) / n, latency / n)
            }
        })
        .unzip()
}

/// Kayenta-style judgement of error rate and latency: the interval's outcome.
fn judge(canary: &[Second], primary: &[Second]) -> Outcome {
    let (c_err, c_lat) = slices(canary);
    let (p_err, p_lat) = slices(primary);
    let cfg = CompareConfig::default();
    let verdicts: Vec<(f64, bool, Classification, NoDataPolicy)> =
        [compare(&c_err, &p_err, &cfg), compare(&c_lat, &p_lat, &cfg)]
            .into_iter()
            .map(|v| (cfg.weight, cfg.critical, v.classification, cfg.no_data))
            .collect();
    score(&verdicts, &ScoreThresholds::default()).outcome
}

/// The controller's sequential settings in the benchmark: `analysis.sequential` with the
/// latency test on the 100 ms bucket and every other field at its default (false-rollback
/// rate 0.01, split in half between the error and the latency test; regression ratio 2;
/// 200 requests; evaluated every 5 s).
fn controller_sequential(promote_early: bool) -> crate::api::Sequential {
    crate::api::Sequential {
        enabled: true,
        promote_early,
        latency_bucket: Some(SLOW_BUCKET_MS as i64),
        ..crate::api::Sequential::default()
    }
}

/// The raw counters since the start of the analysis, as the controller reads them.
fn readings(canary: &[Second], primary: &[Second]) -> CounterReadings {
    let side = |s: &[Second]| {
        let sum = |f: fn(&Second) -> u32| s.iter().map(|x| u64::from(f(x))).sum::<u64>();
        WorkloadCounters {
            requests: sum(|x| x.requests),
            errors: sum(|x| x.errors),
            slow: Some(sum(|x| x.slow)),
            timed: Some(sum(|x| x.requests)),
        }
    };
    CounterReadings {
        canary: side(canary),
        primary: side(primary),
    }
}

fn simulate(seed: u64, scenario: Scenario, policy: Policy) -> ReleaseOutcome {
    let mut traffic = Traffic::new(seed, scenario);
    let mut canary: Vec<Second> = Vec::new();
    let mut primary: Vec<Second> = Vec::new();
    let mut weight = STEP_WEIGHT; // Flagger's first tick moves from 0 to stepWeight.
    let mut failed_checks = 0;
    let seq = controller_sequential(policy == Policy::SerinEarlyPromotion);
    let start = CounterReadings::default();
    let finish = |rolled_back: bool, at: u32, canary: &[Second]| ReleaseOutcome {
        rolled_back,
        decided_at: at,
        canary_errors: canary.iter().map(|s| s.errors).sum(),
        canary_slow: canary.iter().map(|s| s.user_slow).sum(),
    };
    for t in 1..=MAX_SECONDS {
        let (c, p) = traffic.second(weight);
        canary.push(c);
        primary.push(p);

        // The controller's sequential test (`analysis::counts::evaluate`) at every
        // evaluation interval: a crossed bound rolls back at once; enough evidence for
        // the canary lets a passed tick skip the remaining steps (`promoteEarly`).
        let mut promote_early = false;
        if policy != Policy::Flagger && t % SEQUENTIAL_EVERY_S == 0 {
            match evaluate(&start, &readings(&canary, &primary), &seq).decision {
                Decision::Rollback(_) => return finish(true, t, &canary),
                Decision::Promote(_) => promote_early = true,
                Decision::Continue => {}
            }
        }

        if t % INTERVAL_S == 0 {
            let from = canary.len() - INTERVAL_S as usize;
            let mut passed = threshold_checks_pass(&canary[from..]);
            let mut hold = false;
            if policy != Policy::Flagger && passed {
                match judge(&canary[from..], &primary[from..]) {
                    Outcome::Pass => {}
                    Outcome::Marginal => hold = true,
                    Outcome::Fail => passed = false,
                }
            }
            if !passed {
                failed_checks += 1;
                if failed_checks >= THRESHOLD {
                    return finish(true, t, &canary);
                }
            } else if !hold {
                if weight >= MAX_WEIGHT - 1e-9 || promote_early {
                    return finish(false, t, &canary);
                }
                weight = (weight + STEP_WEIGHT).min(MAX_WEIGHT);
            }
        }
    }
    finish(false, MAX_SECONDS, &canary)
}

/// Seed of one release: depends on the run seed, the scenario and the release index, not
/// on the policy, so policies are compared on the same traffic.
fn release_seed(seed: u64, scenario: usize, release: usize) -> u64 {
    let mut mix = Rng::new(seed ^ ((scenario as u64) << 40) ^ release as u64);
    mix.next_u64()
}

/// Runs every scenario under every policy.
pub fn run(cfg: &BenchConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    for (si, scenario) in scenarios().into_iter().enumerate() {
        let releases = if si == 0 {
            cfg.releases.max(1)
        } else {
            (cfg.releases / 5).max(20)
        };
        for policy in Policy::ALL {
            let outcomes: Vec<ReleaseOutcome> = (0..releases)
                .map(|r| simulate(release_seed(cfg.seed, si, r), scenario, policy))
                .collect();
            let n = outcomes.len() as f64;
            let mean = |f: &dyn Fn(&ReleaseOutcome) -> f64| outcomes.iter().map(f).sum::<f64>() / n;
            let promoted: Vec<f64> = outcomes
                .iter()
                .filter(|o| !o.rolled_back)
                .map(|o| f64::from(o.decided_at))
                .collect();
            rows.push(Row {
                scenario: scenario.name,
                policy: policy.name(),
                releases,
                rolled_back: mean(&|o| f64::from(u8::from(o.rolled_back))),
                decision_s: mean(&|o| f64::from(o.decided_at)),
                canary_errors: mean(&|o| f64::from(o.canary_errors)),
                canary_slow: mean(&|o| f64::from(o.canary_slow)),
                promote_s: (!promoted.is_empty())
                    .then(|| promoted.iter().sum::<f64>() / promoted.len() as f64),
            });
        }
    }
    rows
}

const HEADERS: [&str; 9] = [
    "scenario",
    "policy",
    "releases",
    "decision",
    "time to decision (s)",
    "canary errors before decision",
    "canary >250ms before decision",
    "false rollbacks /1000",
    "time to promote (s)",
];

fn cells(row: &Row) -> [String; 9] {
    let decision = if row.rolled_back <= 0.0 {
        "promoted".to_string()
    } else if row.rolled_back >= 1.0 {
        "rolled back".to_string()
    } else {
        format!("rolled back {:.1}%", row.rolled_back * 100.0)
    };
    let false_rollbacks = if row.scenario == "healthy" {
        format!("{:.1}", row.rolled_back * 1000.0)
    } else {
        "-".to_string()
    };
    [
        row.scenario.to_string(),
        row.policy.to_string(),
        row.releases.to_string(),
        decision,
        format!("{:.0}", row.decision_s),
        format!("{:.1}", row.canary_errors),
        format!("{:.1}", row.canary_slow),
        false_rollbacks,
        row.promote_s.map_or("-".to_string(), |s| format!("{s:.0}")),
    ]
}

/// An aligned text table.
pub fn render_text(rows: &[Row]) -> String {
    let body: Vec<[String; 9]> = rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].len())
                .chain([HEADERS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| {
                if i < 2 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(HEADERS.to_vec())];
    out.extend(
        body.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n") + "\n"
}

/// A markdown table.
pub fn render_markdown(rows: &[Row]) -> String {
    let mut out = format!("| {} |\n", HEADERS.join(" | "));
    let aligns: Vec<&str> = (0..HEADERS.len())
        .map(|i| if i < 2 { "---" } else { "---:" })
        .collect();
    out += &format!("| {} |\n", aligns.join(" | "));
    for r in rows {
        out += &format!("| {} |\n", cells(r).join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_calibrated_to_the_baseline_p99() {
        let mut t = Traffic::new(1, scenarios()[0]);
        let mut buckets = [0u32; BUCKETS_MS.len() + 1];
        let mut slow = 0;
        for _ in 0..2000 {
            let (c, p) = t.second(0.0);
            assert_eq!(c.requests, 0);
            slow += p.slow;
            for (b, n) in buckets.iter_mut().zip(p.buckets) {
                *b += n;
            }
        }
        // 2.5% of requests are above 100 ms when the p99 is 120 ms with sigma 0.5.
        let share = f64::from(slow) / f64::from(2000 * RPS);
        assert!((share - 0.025).abs() < 0.002, "{share}");
        let p99 = histogram_quantile(0.99, &buckets);
        assert!((100.0..250.0).contains(&p99), "{p99}");
    }

    #[test]
    fn histogram_quantile_interpolates_within_a_bucket() {
        let mut buckets = [0u32; BUCKETS_MS.len() + 1];
        buckets[4] = 100; // all in (50, 100]
        assert_eq!(histogram_quantile(0.5, &buckets), 75.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_release() {
        let s = scenarios()[2];
        let a = simulate(9, s, Policy::Serin);
        let b = simulate(9, s, Policy::Serin);
        assert_eq!(
            (a.rolled_back, a.decided_at, a.canary_errors),
            (b.rolled_back, b.decided_at, b.canary_errors)
        );
    }

    #[test]
    fn flagger_promotes_a_healthy_release_after_five_intervals() {
        let o = simulate(3, scenarios()[0], Policy::Flagger);
        assert!(!o.rolled_back);
        assert_eq!(o.decided_at % INTERVAL_S, 0);
    }

    #[test]
    fn tables_have_one_line_per_row_plus_headers() {
        let rows = run(&BenchConfig {
            seed: 1,
            releases: 20,
        });
        assert_eq!(rows.len(), scenarios().len() * Policy::ALL.len());
        assert_eq!(render_text(&rows).lines().count(), rows.len() + 1);
        assert_eq!(render_markdown(&rows).lines().count(), rows.len() + 2);
    }
}
