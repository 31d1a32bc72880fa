//! Kayenta-style metric classification and weighted scoring.
//!
//! [`compare`] classifies one metric (canary against primary) as Kayenta's
//! `MannWhitneyClassifier` does: the confidence interval of the Hodges-Lehmann shift must
//! clear a tolerance band around zero, in the configured direction, and the mean ratio must
//! pass the effect-size limits. [`score`] combines the verdicts into a 0-100 score and a
//! Pass/Marginal/Fail outcome, as Kayenta's `WeightedSumScorer` and threshold classifier do.

use super::mann_whitney::{
    Alternative, NanStrategy, filter_nan, hodges_lehmann, mann_whitney_u, shift_confidence_interval,
};

/// Which change of the metric is a regression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Higher is worse (latency, error rate): only `High` counts.
    #[default]
    Increase,
    /// Lower is worse (throughput, success rate): only `Low` counts.
    Decrease,
    /// Any significant change counts.
    Either,
}

/// How a metric without data is treated in the score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NoDataPolicy {
    /// No data is a failed metric (the default: no data, no promotion).
    #[default]
    Fail,
    /// No data passes (for metrics that are legitimately absent, e.g. no errors recorded).
    Pass,
    /// No data holds the analysis: the outcome is at most `Marginal`.
    Hold,
}

/// Per-metric comparison settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CompareConfig {
    /// Which change is a regression.
    pub direction: Direction,
    /// Confidence level of the shift interval (Kayenta's NetflixACAJudge uses 0.98).
    pub confidence: f64,
    /// Half-width of the band around zero the interval must clear, as a fraction of the
    /// primary's mean (0.25: shifts within 25% of the primary's level are tolerated).
    pub tolerance: f64,
    /// Effect-size limit: `High` only when `mean(canary) / mean(primary)` is at least this.
    pub max_ratio: Option<f64>,
    /// Effect-size limit: `Low` only when `mean(canary) / mean(primary)` is at most this.
    pub min_ratio: Option<f64>,
    /// How missing data is scored.
    pub no_data: NoDataPolicy,
    /// Weight of the metric in the score.
    pub weight: f64,
    /// A critical metric that fails makes the whole score `Fail`.
    pub critical: bool,
    /// What to do with NaN values before comparing (Kayenta's `nanStrategy`).
    pub nan: NanStrategy,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            direction: Direction::Increase,
            confidence: 0.98,
            tolerance: 0.25,
            max_ratio: None,
            min_ratio: None,
            no_data: NoDataPolicy::Fail,
            weight: 1.0,
            critical: false,
            nan: NanStrategy::Remove,
        }
    }
}

/// Classification of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Classification {
    /// No regression in the configured direction.
    Pass,
    /// The canary is significantly higher (only reported when that direction counts).
    High,
    /// The canary is significantly lower (only reported when that direction counts).
    Low,
    /// A sample was empty after NaN handling.
    NoData,
}

/// The judgement of one metric, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricVerdict {
    /// The classification.
    pub classification: Classification,
    /// Mann-Whitney p-value, one-sided in the configured direction (two-sided for `Either`);
    /// NaN without data.
    pub p_value: f64,
    /// Hodges-Lehmann estimate of the shift canary - primary; NaN without data.
    pub estimate: f64,
    /// Confidence interval of the shift at the configured confidence; NaN without data.
    pub interval: (f64, f64),
    /// `mean(canary) / mean(primary)`; 1 when both means are zero, infinite when only the
    /// primary's is; NaN without data.
    pub mean_ratio: f64,
    /// One readable sentence for an event or a log line.
    pub reason: String,
}

/// Compares canary samples with primary samples for one metric.
///
/// Order of checks (Kayenta's): no data, identical samples (Pass), the interval of the
/// shift against the tolerance band `±tolerance·|mean(primary)|`, then the effect-size
/// limits on the mean ratio. When each sample is constant (the degenerate case where
/// Kayenta adds noise), the shift is known exactly and the interval is that single point.
pub fn compare(canary: &[f64], primary: &[f64], cfg: &CompareConfig) -> MetricVerdict {
    let canary = filter_nan(canary, cfg.nan);
    let primary = filter_nan(primary, cfg.nan);
    if canary.is_empty() || primary.is_empty() {
        let which = match (canary.is_empty(), primary.is_empty()) {
            (true, true) => "canary and primary have",
            (true, false) => "canary has",
            _ => "primary has",
        };
        return MetricVerdict {
            classification: Classification::NoData,
            p_value: f64::NAN,
            estimate: f64::NAN,
            interval: (f64::NAN, f64::NAN),
            mean_ratio: f64::NAN,
            reason: format!("{which} no data"),
        };
    }
    let canary_mean = mean(&canary);
    let primary_mean = mean(&primary);
    let mean_ratio = if primary_mean != 0.0 {
        canary_mean / primary_mean
    } else if canary_mean == 0.0 {
        1.0
    } else {
        f64::INFINITY.copysign(canary_mean)
    };
    let alternative = match cfg.direction {
        Direction::Increase => Alternative::Greater,
        Direction::Decrease => Alternative::Less,
        Direction::Either => Alternative::TwoSided,
    };
    let p_value = mann_whitney_u(&canary, &primary, alternative)
        .map(|t| t.p_value)
        .unwrap_or(1.0);
    let estimate = hodges_lehmann(&canary, &primary).unwrap_or(0.0);

    let mut sorted_canary = canary.clone();
    let mut sorted_primary = primary.clone();
    sorted_canary.sort_by(f64::total_cmp);
    sorted_primary.sort_by(f64::total_cmp);
    let constant = |s: &[f64]| s.first() == s.last();
    let interval = if sorted_canary == sorted_primary {
        return MetricVerdict {
            classification: Classification::Pass,
            p_value,
            estimate,
            interval: (0.0, 0.0),
            mean_ratio,
            reason: "canary and primary data are identical".to_string(),
        };
    } else if constant(&sorted_canary) && constant(&sorted_primary) {
        (estimate, estimate)
    } else {
        shift_confidence_interval(&canary, &primary, cfg.confidence)
            .expect("samples are non-empty, finite and not all tied")
    };

    let band = cfg.tolerance * primary_mean.abs();
    let counts_high = matches!(cfg.direction, Direction::Increase | Direction::Either);
    let counts_low = matches!(cfg.direction, Direction::Decrease | Direction::Either);
    let big_enough_up = cfg.max_ratio.is_none_or(|r| mean_ratio >= r);
    let big_enough_down = cfg.min_ratio.is_none_or(|r| mean_ratio <= r);
    let classification = if counts_high && interval.0 > band && big_enough_up {
        Classification::High
    } else if counts_low && interval.1 < -band && big_enough_down {
        Classification::Low
    } else {
        Classification::Pass
    };
    let reason = describe(
        classification,
        estimate,
        interval,
        primary_mean,
        cfg.confidence,
    );
    MetricVerdict {
        classification,
        p_value,
        estimate,
        interval,
        mean_ratio,
        reason,
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// "canary is higher than primary: +38% (98% CI 21%..55%)", relative to the primary's mean
/// when it is not zero, in the metric's own unit otherwise.
fn describe(
    classification: Classification,
    estimate: f64,
    interval: (f64, f64),
    primary_mean: f64,
    confidence: f64,
) -> String {
    let head = match classification {
        Classification::High => "canary is higher than primary",
        Classification::Low => "canary is lower than primary",
        _ => "no significant regression",
    };
    let level = confidence * 100.0;
    if primary_mean != 0.0 {
        let pct = |v: f64| v / primary_mean.abs() * 100.0;
        format!(
            "{head}: {:+.0}% ({level:.0}% CI {:.0}%..{:.0}%)",
            pct(estimate),
            pct(interval.0),
            pct(interval.1)
        )
    } else {
        format!(
            "{head}: shift {estimate:+.4} ({level:.0}% CI {:.4}..{:.4})",
            interval.0, interval.1
        )
    }
}

/// Score levels that separate Pass, Marginal and Fail (Kayenta's `scoreThresholds`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreThresholds {
    /// A score at or above this passes.
    pub pass: f64,
    /// A score at or above this (and below `pass`) is marginal; below it fails.
    pub marginal: f64,
}

impl Default for ScoreThresholds {
    fn default() -> Self {
        Self {
            pass: 95.0,
            marginal: 75.0,
        }
    }
}

/// Outcome of one analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Good enough to go on.
    Pass,
    /// Neither: hold at the current step.
    Marginal,
    /// A failed check.
    Fail,
}

/// Combined score of the metric verdicts.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Score {
    /// Weighted percentage of passing metrics, 0 to 100 (0 when a critical metric failed).
    pub value: f64,
    /// The outcome after thresholds, critical failures and held metrics.
    pub outcome: Outcome,
}

/// Scores `(weight, critical, classification, no-data policy)` verdicts.
///
/// The value is `100 · Σ weight(passing) / Σ weight(counted)`. `High` and `Low` fail (they
/// are only produced in the configured direction); `NoData` fails, passes, or, with `Hold`,
/// is left out of the value and caps the outcome at `Marginal`. A failing critical metric
/// makes the score 0 and `Fail`. Nothing to score is `Fail`: no data, no promotion.
pub fn score(
    verdicts: &[(f64, bool, Classification, NoDataPolicy)],
    thresholds: &ScoreThresholds,
) -> Score {
    let mut total = 0.0;
    let mut passed = 0.0;
    let mut held = false;
    let mut critical_failure = false;
    for &(weight, critical, classification, no_data) in verdicts {
        let pass = match (classification, no_data) {
            (Classification::Pass, _) | (Classification::NoData, NoDataPolicy::Pass) => true,
            (Classification::NoData, NoDataPolicy::Hold) => {
                held = true;
                continue;
            }
            _ => false,
        };
        let weight = weight.max(0.0);
        total += weight;
        if pass {
            passed += weight;
        } else if critical {
            critical_failure = true;
        }
    }
    if critical_failure {
        return Score {
            value: 0.0,
            outcome: Outcome::Fail,
        };
    }
    if total == 0.0 {
        let outcome = if held {
            Outcome::Marginal
        } else {
            Outcome::Fail
        };
        return Score {
            value: 0.0,
            outcome,
        };
    }
    let value = 100.0 * passed / total;
    let outcome = if value >= thresholds.pass {
        Outcome::Pass
    } else if value >= thresholds.marginal {
        Outcome::Marginal
    } else {
        Outcome::Fail
    };
    let outcome = match outcome {
        Outcome::Pass if held => Outcome::Marginal,
        other => other,
    };
    Score { value, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CompareConfig {
        CompareConfig::default()
    }

    fn series(base: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| base + (i % 7) as f64 * 0.5).collect()
    }

    #[test]
    fn clear_increase_is_high_with_a_readable_reason() {
        let primary = series(100.0, 30);
        let canary: Vec<f64> = primary.iter().map(|v| v * 1.5).collect();
        let v = compare(&canary, &primary, &cfg());
        assert_eq!(v.classification, Classification::High);
        assert!(
            v.reason.starts_with("canary is higher than primary: +"),
            "{}",
            v.reason
        );
        assert!(v.reason.contains("98% CI"));
        assert!(v.p_value < 0.001);
    }

    #[test]
    fn increase_within_tolerance_passes() {
        let primary = series(100.0, 30);
        let canary: Vec<f64> = primary.iter().map(|v| v * 1.1).collect();
        assert_eq!(
            compare(&canary, &primary, &cfg()).classification,
            Classification::Pass
        );
    }

    #[test]
    fn decrease_only_counts_in_its_direction() {
        let primary = series(100.0, 30);
        let canary: Vec<f64> = primary.iter().map(|v| v * 0.5).collect();
        assert_eq!(
            compare(&canary, &primary, &cfg()).classification,
            Classification::Pass
        );
        let either = CompareConfig {
            direction: Direction::Either,
            ..cfg()
        };
        assert_eq!(
            compare(&canary, &primary, &either).classification,
            Classification::Low
        );
    }

    #[test]
    fn effect_size_limit_turns_a_small_significant_increase_into_pass() {
        let primary = series(100.0, 40);
        let canary: Vec<f64> = primary.iter().map(|v| v * 1.4).collect();
        let limited = CompareConfig {
            max_ratio: Some(1.5),
            ..cfg()
        };
        assert_eq!(
            compare(&canary, &primary, &limited).classification,
            Classification::Pass
        );
    }

    #[test]
    fn empty_or_all_nan_sample_is_no_data() {
        let v = compare(&[f64::NAN, f64::NAN], &[1.0, 2.0], &cfg());
        assert_eq!(v.classification, Classification::NoData);
        assert_eq!(v.reason, "canary has no data");
        let zero = CompareConfig {
            nan: NanStrategy::ReplaceWithZero,
            ..cfg()
        };
        assert_ne!(
            compare(&[f64::NAN], &[1.0, 2.0], &zero).classification,
            Classification::NoData
        );
    }

    #[test]
    fn identical_and_constant_samples_do_not_panic() {
        assert_eq!(
            compare(&[3.0, 1.0], &[1.0, 3.0], &cfg()).classification,
            Classification::Pass
        );
        assert_eq!(
            compare(&[0.0; 5], &[0.0; 7], &cfg()).classification,
            Classification::Pass
        );
        let v = compare(&[2.0; 5], &[1.0; 5], &cfg());
        assert_eq!(v.classification, Classification::High);
        assert_eq!(v.interval, (1.0, 1.0));
    }

    #[test]
    fn verdict_serializes_for_logging() {
        let v = compare(&[2.0, 3.0], &[1.0, 2.0], &cfg());
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("\"classification\":\"pass\""));
    }

    #[test]
    fn score_follows_kayenta_weighted_sum() {
        let t = ScoreThresholds::default();
        let all_pass = [(1.0, false, Classification::Pass, NoDataPolicy::Fail); 4];
        assert_eq!(score(&all_pass, &t).outcome, Outcome::Pass);
        let mut one_high = all_pass;
        one_high[0].2 = Classification::High;
        let s = score(&one_high, &t);
        assert_eq!((s.value, s.outcome), (75.0, Outcome::Marginal));
        one_high[1].2 = Classification::Low;
        assert_eq!(score(&one_high, &t).outcome, Outcome::Fail);
    }

    #[test]
    fn failing_critical_metric_fails_the_score() {
        let mut v = [(1.0, false, Classification::Pass, NoDataPolicy::Fail); 20];
        v[0] = (1.0, true, Classification::High, NoDataPolicy::Fail);
        let s = score(&v, &ScoreThresholds::default());
        assert_eq!((s.value, s.outcome), (0.0, Outcome::Fail));
    }

    #[test]
    fn no_data_follows_its_policy() {
        let t = ScoreThresholds::default();
        let with = |p| {
            [
                (1.0, false, Classification::Pass, p),
                (1.0, false, Classification::NoData, p),
            ]
        };
        assert_eq!(score(&with(NoDataPolicy::Fail), &t).outcome, Outcome::Fail);
        assert_eq!(score(&with(NoDataPolicy::Pass), &t).outcome, Outcome::Pass);
        assert_eq!(
            score(&with(NoDataPolicy::Hold), &t).outcome,
            Outcome::Marginal
        );
        assert_eq!(score(&[], &t).outcome, Outcome::Fail);
    }
}
