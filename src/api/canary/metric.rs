//! The metric checks of `spec.analysis.metrics`: a query with a threshold, or a
//! statistical comparison of the canary with the primary (`compare`), and the judge and
//! sequential test settings that score them. Flagger's defaults for unset fields are
//! applied by the accessor methods here.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::analysis::duration_or;
use super::{DEFAULT_METRIC_INTERVAL, DEFAULT_SEQUENTIAL_EVALUATION_INTERVAL, is_false};
use crate::api::schema;

/// One metric check of the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// Name of the metric: request-success-rate and request-duration are builtin; any other
    /// name needs a templateRef (or a query).
    pub name: String,

    /// Window of the query, written into {{ interval }} (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Option<String>,

    /// Deprecated: highest accepted value; use thresholdRange.max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,

    /// Accepted range of the metric's value; a value outside it is a failed check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,

    /// Deprecated: inline Prometheus query; use templateRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,

    /// MetricTemplate that holds the query (default namespace: the Canary's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,

    /// Values for {{ variables.NAME }} in the template's query.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_variables: BTreeMap<String, String>,

    /// Judge the metric by comparing canary with primary (Mann-Whitney U) instead of a fixed
    /// threshold; the query then selects the compared workload with {{ target }}
    /// (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<MetricComparison>,

    /// What a check whose query returns no data (no series, or NaN) counts as: fail,
    /// hold (the step waits, nothing is counted) or pass (default fail). While the canary
    /// has had traffic for less than the metric window, no data holds whatever this says.
    /// `hold` also waits out a metrics server that does not answer (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoDataPolicy>,
}

/// Accepted range of a metric value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
    "message": "thresholdRange.min must not be greater than thresholdRange.max",
}]))]
pub struct ThresholdRange {
    /// Lowest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Reference to a MetricTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// Name of the MetricTemplate.
    pub name: String,
    /// Namespace of the MetricTemplate (default: the Canary's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Statistical comparison of canary against primary for one metric (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.minRatio) || !has(self.maxRatio) || self.minRatio <= self.maxRatio",
    "message": "compare.minRatio must not be greater than compare.maxRatio",
}]))]
pub struct MetricComparison {
    /// Which change of the canary is bad: increase (e.g. latency, errors), decrease
    /// (e.g. success rate) or either (default increase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,

    /// Confidence level of the test and of the Hodges-Lehmann interval (default 0.98).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub confidence: Option<f64>,

    /// Relative change tolerated before a significant difference counts, as a fraction of
    /// the primary's level (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub tolerance: Option<f64>,

    /// Effect-size limit: the canary fails when its mean is more than maxRatio times the
    /// primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_ratio: Option<f64>,

    /// Effect-size limit: the canary fails when its mean is less than minRatio times the
    /// primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub min_ratio: Option<f64>,

    /// What a step with no data for this metric counts as: fail, pass or hold (wait, neither
    /// pass nor fail) (default fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoDataPolicy>,

    /// Weight of this metric in the judge's score (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub weight: Option<f64>,

    /// A failure of a critical metric fails the step whatever the score.
    #[serde(default, skip_serializing_if = "is_false")]
    pub critical: bool,
}

/// Which change of the canary's metric is a regression.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = schema::drop_description)]
pub enum Direction {
    /// Higher is worse (latency, error rate).
    #[default]
    Increase,
    /// Lower is worse (success rate, throughput).
    Decrease,
    /// Any significant change is a regression.
    Either,
}

/// What a metric with no data (no samples, or NaN) counts as; `hold` also waits out a
/// metrics server that does not answer, which otherwise fails the check.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = schema::drop_description)]
pub enum NoDataPolicy {
    /// A failed check.
    #[default]
    Fail,
    /// A passed check.
    Pass,
    /// Neither: the step waits for data without counting a failure.
    Hold,
}

/// Pass/Marginal/Fail scoring of compared metrics (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Judge {
    /// Lowest score, in percent of the metrics' weight, that passes a step (default 95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub pass_score: Option<f64>,
    /// Lowest score that is marginal rather than failed (default 75); a marginal step
    /// neither advances nor counts as a failed check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub marginal_score: Option<f64>,
}

/// Sequential decision settings (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sequential {
    /// Decide continuously instead of only at the end of each interval.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enabled: bool,
    /// Highest acceptable probability of rolling back a canary that is as good as the
    /// primary (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0001, max = 0.5))]
    pub false_rollback_rate: Option<f64>,
    /// Canary requests needed before any early decision (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_requests: Option<i64>,
    /// Also promote early when the canary is clearly no worse: the remaining steps are
    /// skipped (approvals and confirm-promotion webhooks still apply).
    #[serde(default, skip_serializing_if = "is_false")]
    pub promote_early: bool,
    /// How often the counts are read and the test evaluated between analysis ticks
    /// (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub evaluation_interval: Option<String>,
    /// The regression the test looks for: the canary failing this many times as often as
    /// the primary (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.1, max = 100.0))]
    pub regression_ratio: Option<f64>,
    /// Requests slower than this histogram bucket bound (milliseconds; one of the mesh's
    /// `le` bounds) count as bad, in a second test beside the errors (unset: errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub latency_bucket: Option<i64>,
}

impl CanaryMetric {
    /// Query window (default 1m).
    pub fn interval(&self) -> Duration {
        duration_or(self.interval.as_deref(), Duration::from_secs(60))
    }

    /// Query window as written into `{{ interval }}` (default `1m`).
    pub fn interval_str(&self) -> &str {
        self.interval.as_deref().unwrap_or(DEFAULT_METRIC_INTERVAL)
    }

    /// What no data counts as once the first window is over (default fail).
    pub fn no_data(&self) -> NoDataPolicy {
        self.no_data.unwrap_or_default()
    }

    /// Whether the metric is judged by comparison with the primary.
    pub fn is_compared(&self) -> bool {
        self.compare.is_some()
    }
}

impl MetricComparison {
    /// Which change is a regression (default increase).
    pub fn direction(&self) -> Direction {
        self.direction.unwrap_or_default()
    }

    /// Confidence level (default 0.98).
    pub fn confidence(&self) -> f64 {
        self.confidence.unwrap_or(0.98)
    }

    /// Tolerated relative change (default 0.25).
    pub fn tolerance(&self) -> f64 {
        self.tolerance.unwrap_or(0.25)
    }

    /// What no data counts as (default fail).
    pub fn no_data(&self) -> NoDataPolicy {
        self.no_data.unwrap_or_default()
    }

    /// Weight in the judge's score (default 1).
    pub fn weight(&self) -> f64 {
        self.weight.unwrap_or(1.0)
    }
}

impl Judge {
    /// Lowest passing score (default 95).
    pub fn pass_score(&self) -> f64 {
        self.pass_score.unwrap_or(95.0)
    }

    /// Lowest marginal score (default 75).
    pub fn marginal_score(&self) -> f64 {
        self.marginal_score.unwrap_or(75.0)
    }
}

impl Sequential {
    /// Highest acceptable false-rollback probability (default 0.01).
    pub fn false_rollback_rate(&self) -> f64 {
        self.false_rollback_rate.unwrap_or(0.01)
    }

    /// Canary requests needed before an early decision (default 200).
    pub fn min_requests(&self) -> u64 {
        self.min_requests
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(200)
    }

    /// Time between evaluations between the analysis ticks (default 5s).
    pub fn evaluation_interval(&self) -> Duration {
        duration_or(
            self.evaluation_interval.as_deref(),
            DEFAULT_SEQUENTIAL_EVALUATION_INTERVAL,
        )
        .max(Duration::from_secs(1))
    }

    /// The failure ratio the test looks for (default 2).
    pub fn regression_ratio(&self) -> f64 {
        self.regression_ratio.filter(|r| *r > 1.0).unwrap_or(2.0)
    }

    /// The latency bucket bound in milliseconds, when latency is tested.
    pub fn latency_bucket(&self) -> Option<u64> {
        self.latency_bucket
            .and_then(|b| u64::try_from(b).ok())
            .filter(|b| *b > 0)
    }
}
