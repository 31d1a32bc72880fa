//! The `spec.analysis` part of a Canary: traffic steps, metric checks and their statistical
//! comparison, conformance tests, webhooks and alerts. Flagger's defaults for unset fields
//! are applied by the accessor methods here.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::JobSpec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::metric::{CanaryMetric, Judge, Sequential};
use super::{
    DEFAULT_ANALYSIS_INTERVAL, DEFAULT_CONFORMANCE_TEST_TIMEOUT, DEFAULT_SESSION_AFFINITY_MAX_AGE,
    DEFAULT_WEBHOOK_TIMEOUT, is_false,
};
use crate::api::{duration, schema};

/// How a new revision is analysed and how traffic moves to it.
///
/// The strategy follows from the fields, as in Flagger: `stepWeight`/`stepWeights` run a
/// weighted canary; `iterations` with `match` runs an A/B test; `iterations` alone runs
/// blue/green, with traffic mirrored to the canary when `mirror` is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.iterations) || has(self.stepWeight) || has(self.stepWeights)",
        "message": "set stepWeight or stepWeights for a weighted canary, or iterations for A/B testing and blue/green",
    },
    {
        "rule": "!has(self.stepWeight) || !has(self.maxWeight) || self.maxWeight >= self.stepWeight",
        "message": "maxWeight must be greater than or equal to stepWeight",
    },
    {
        "rule": "!has(self.judge) || !has(self.judge.passScore) || !has(self.judge.marginalScore) || self.judge.marginalScore <= self.judge.passScore",
        "message": "judge.marginalScore must not be greater than judge.passScore",
    },
]))]
pub struct CanaryAnalysis {
    /// Time between two analysis steps (default 60s), a duration such as 30s or 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Option<String>,

    /// Number of failed checks after which the canary is rolled back (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub threshold: Option<i32>,

    /// Highest traffic weight, in percent, routed to the canary before promotion
    /// (default 100, or the last of stepWeights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: Option<i32>,

    /// Traffic weight, in percent, added to the canary at each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub step_weight: Option<i32>,

    /// Successive traffic weights, in percent, routed to the canary; strictly increasing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(range(min = 1, max = 100)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.isSorted() && self.all(w, self.exists_one(v, v == w))",
        "message": "stepWeights must be strictly increasing, e.g. [1, 5, 10, 25, 50]",
    }]))]
    pub step_weights: Vec<i32>,

    /// Traffic weight, in percent, moved to the primary at each promotion step
    /// (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub step_weight_promotion: Option<i32>,

    /// Number of analysis steps for A/B testing and blue/green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub iterations: Option<i32>,

    /// Mirror (shadow) live traffic to the canary during blue/green analysis (Istio,
    /// Gateway API).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mirror: bool,

    /// Percentage of traffic mirrored to the canary (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub mirror_weight: Option<i32>,

    /// Percentage of primary pods that must be available for the primary to count as ready
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub primary_ready_threshold: Option<i32>,

    /// Percentage of canary pods that must be available for the canary to count as ready
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub canary_ready_threshold: Option<i32>,

    /// A/B testing: requests matching any of these conditions (Istio HTTPMatchRequest, e.g.
    /// headers or cookies) go to the canary.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::free_form_object_list")]
    pub match_: Vec<serde_json::Value>,

    /// Keep a user on the version they first reached, with a cookie, during the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,

    /// Metric checks run at every analysis step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub metrics: Vec<CanaryMetric>,

    /// Webhooks called at the stages of the rollout (gates, tests, load generation, events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub webhooks: Vec<CanaryWebhook>,

    /// Notifications sent for this canary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub alerts: Vec<CanaryAlert>,

    /// How compared metrics are combined into a verdict (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Judge>,

    /// Sequential decisions: roll back as soon as the evidence says the canary is worse, and
    /// optionally promote early when it is clearly fine (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<Sequential>,

    /// Kubernetes Jobs run against the canary before it receives traffic; a failure rolls
    /// back (serin addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub conformance_tests: Vec<ConformanceTest>,
}

/// Cookie-based session affinity during the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// Name of the cookie that pins a user to the canary.
    pub cookie_name: String,
    /// Name of the cookie that pins a user to the primary for the rest of a step
    /// (optional; unset means no primary stickiness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_cookie_name: Option<String>,
    /// Lifetime of the cookie in seconds (default 86400, one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_age: Option<i32>,
    /// Host the cookie is sent to (cookie `Domain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Path the request must have for the cookie to be sent (cookie `Path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Forbid scripts from reading the cookie (cookie `HttpOnly`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub http_only: bool,
    /// Send the cookie only over https (cookie `Secure`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub secure: bool,
    /// Store the cookie in partitioned storage (cookie `Partitioned`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub partitioned: bool,
    /// Whether the cookie is sent with cross-site requests (cookie `SameSite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Strict", "Lax", "None"]))]
    pub same_site: Option<String>,
}

/// A conformance test: a Job run against the canary before it receives traffic
/// (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConformanceTest {
    /// Name of the test, unique within the Canary; part of the Job's name.
    #[schemars(length(min = 1, max = 40))]
    pub name: String,
    /// The Job to run. Its containers get SERIN_CANARY_ADDRESS, SERIN_PRIMARY_ADDRESS,
    /// SERIN_REVISION and SERIN_NAMESPACE in their environment.
    pub template: JobSpec,
    /// Time the Job may run before it counts as failed (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<String>,
    /// When the test runs (default `[before-traffic]`): `before-traffic` (a failure rolls
    /// back before any user reaches the canary), `each-step` (at every traffic weight of
    /// a weighted canary; the next step waits for it, a failure rolls back at once),
    /// `after-promotion` (against the promoted primary; a failure is reported, since
    /// there is nothing left to roll back to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub when: Vec<ConformanceWhen>,
}

/// When a conformance test runs (serin addition).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConformanceWhen {
    /// Once per revision, before any traffic (the default).
    BeforeTraffic,
    /// At every traffic weight of a weighted canary, before the next step.
    EachStep,
    /// Once the primary runs the promoted revision, before the phase is Succeeded.
    AfterPromotion,
}

/// A webhook called during the rollout (Flagger's CanaryWebhook).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    /// Name of the webhook.
    pub name: String,

    /// When the webhook is called: confirm-rollout, pre-rollout, rollout (default),
    /// confirm-traffic-increase, confirm-promotion, post-rollout, rollback or event.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<WebhookType>,

    /// URL the payload is POSTed to.
    pub url: String,

    /// Request timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<String>,

    /// Key-value pairs sent in the payload's metadata (e.g. the load tester's cmd).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,

    /// Send no alert when this webhook fails.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mute_alert: bool,

    /// Do not verify the webhook's TLS certificate.
    #[serde(default, rename = "disableTLS", skip_serializing_if = "is_false")]
    pub disable_tls: bool,

    /// Number of retries of a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retries: Option<i32>,
}

/// When a webhook is called, with Flagger's names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(transform = schema::drop_description)]
pub enum WebhookType {
    /// Gate before the rollout starts; the rollout waits until it answers 200.
    ConfirmRollout,
    /// Before any traffic reaches the canary; a failure counts as a failed check.
    PreRollout,
    /// At every analysis step; a failure counts as a failed check.
    #[default]
    Rollout,
    /// Gate before each traffic increase.
    ConfirmTrafficIncrease,
    /// Gate before promotion.
    ConfirmPromotion,
    /// After promotion or rollback.
    PostRollout,
    /// Polled during the analysis; answering 200 rolls back.
    Rollback,
    /// Receives every event serin emits for the canary.
    Event,
}

/// A notification target of the canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    /// Name of the alert.
    pub name: String,
    /// Lowest severity sent: info (everything), warn or error (default info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<AlertSeverity>,
    /// The AlertProvider that delivers the notifications.
    pub provider_ref: ProviderRef,
    /// Also send a message for each traffic step (serin addition; default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub steps: bool,
}

/// Severity of a notification.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = schema::drop_description)]
pub enum AlertSeverity {
    /// Every event.
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

/// Reference to an AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// Name of the AlertProvider.
    pub name: String,
    /// Namespace of the AlertProvider (default: the Canary's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Parses an optional duration field, falling back to `default` when it is unset or (for
/// objects stored before validation existed) unparsable, as Flagger does.
pub(super) fn duration_or(value: Option<&str>, default: Duration) -> Duration {
    value
        .and_then(|v| duration::parse(v).ok())
        .unwrap_or(default)
}

fn percent(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .map_or(default, |v| v.min(100))
}

impl CanaryAnalysis {
    /// Whether any conformance test runs at `when`.
    pub fn has_conformance(&self, when: ConformanceWhen) -> bool {
        self.conformance_tests.iter().any(|t| t.runs(when))
    }

    /// Time between analysis steps (default 60s). Unlike Flagger there is no 10s floor:
    /// intervals down to 1s are honoured.
    pub fn interval(&self) -> Duration {
        duration_or(self.interval.as_deref(), DEFAULT_ANALYSIS_INTERVAL)
    }

    /// Failed checks that trigger a rollback (default 1).
    pub fn threshold(&self) -> u32 {
        self.threshold
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(1)
    }

    /// Highest weight routed to the canary: the last of stepWeights when set, else maxWeight,
    /// else 100 (Flagger's order).
    pub fn max_weight(&self) -> u32 {
        match self.step_weights.last() {
            Some(last) => percent(Some(*last), 100),
            None => percent(self.max_weight, 100),
        }
    }

    /// Weight moved back to the primary per promotion step; 100 (a single step) when unset.
    pub fn step_weight_promotion(&self) -> u32 {
        percent(self.step_weight_promotion, 100)
    }

    /// Percentage of traffic mirrored to the canary (default 100).
    pub fn mirror_weight(&self) -> u32 {
        percent(self.mirror_weight, 100)
    }

    /// Percentage of primary pods that must be available (default 100).
    pub fn primary_ready_threshold(&self) -> u32 {
        percent(self.primary_ready_threshold, 100)
    }

    /// Percentage of canary pods that must be available (default 100).
    pub fn canary_ready_threshold(&self) -> u32 {
        percent(self.canary_ready_threshold, 100)
    }

    /// Whether this analysis is weighted (stepWeight or stepWeights) rather than iterations.
    pub fn is_weighted(&self) -> bool {
        self.step_weight.is_some() || !self.step_weights.is_empty()
    }

    /// Judge settings, with defaults when unset.
    pub fn judge(&self) -> Judge {
        self.judge.clone().unwrap_or_default()
    }

    /// Sequential settings, disabled when unset.
    pub fn sequential(&self) -> Sequential {
        self.sequential.clone().unwrap_or_default()
    }
}

impl ConformanceTest {
    /// Time the Job may run (default 5m).
    pub fn timeout(&self) -> Duration {
        duration_or(self.timeout.as_deref(), DEFAULT_CONFORMANCE_TEST_TIMEOUT)
    }

    /// Whether the test runs at `when` (only before traffic when unset).
    pub fn runs(&self, when: ConformanceWhen) -> bool {
        if self.when.is_empty() {
            when == ConformanceWhen::BeforeTraffic
        } else {
            self.when.contains(&when)
        }
    }
}

impl CanaryWebhook {
    /// When the webhook is called (default rollout).
    pub fn webhook_type(&self) -> WebhookType {
        self.type_.unwrap_or_default()
    }

    /// Request timeout (default 10s).
    pub fn timeout(&self) -> Duration {
        duration_or(self.timeout.as_deref(), DEFAULT_WEBHOOK_TIMEOUT)
    }
}

impl CanaryAlert {
    /// Lowest severity sent (default info).
    pub fn severity(&self) -> AlertSeverity {
        self.severity.unwrap_or_default()
    }
}

impl SessionAffinity {
    /// Cookie lifetime in seconds (default 86400).
    pub fn max_age(&self) -> i32 {
        self.max_age.unwrap_or(DEFAULT_SESSION_AFFINITY_MAX_AGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Direction, MetricComparison, NoDataPolicy};

    #[test]
    fn max_weight_is_the_last_step_weight_when_steps_are_listed() {
        let stepped = CanaryAnalysis {
            step_weights: vec![1, 5, 25, 60],
            max_weight: Some(90),
            ..Default::default()
        };
        assert_eq!(stepped.max_weight(), 60);
        let linear = CanaryAnalysis {
            step_weight: Some(10),
            max_weight: Some(50),
            ..Default::default()
        };
        assert_eq!(linear.max_weight(), 50);
        assert!(linear.is_weighted());
    }

    #[test]
    fn short_intervals_are_honoured_unlike_flagger() {
        let a = CanaryAnalysis {
            interval: Some("1s".into()),
            ..Default::default()
        };
        assert_eq!(a.interval(), Duration::from_secs(1));
    }

    #[test]
    fn metric_webhook_and_alert_defaults() {
        let metric: CanaryMetric =
            serde_json::from_value(serde_json::json!({"name": "request-success-rate"})).unwrap();
        assert_eq!(metric.interval(), Duration::from_secs(60));
        assert_eq!(metric.interval_str(), "1m");
        assert!(!metric.is_compared());

        let hook: CanaryWebhook =
            serde_json::from_value(serde_json::json!({"name": "load", "url": "http://t/"}))
                .unwrap();
        assert_eq!(hook.webhook_type(), WebhookType::Rollout);
        assert_eq!(hook.timeout(), Duration::from_secs(10));

        let alert: CanaryAlert = serde_json::from_value(
            serde_json::json!({"name": "on-call", "providerRef": {"name": "slack"}}),
        )
        .unwrap();
        assert_eq!(alert.severity(), AlertSeverity::Info);

        let compare = MetricComparison::default();
        assert_eq!(compare.direction(), Direction::Increase);
        assert_eq!(compare.confidence(), 0.98);
        assert_eq!(compare.tolerance(), 0.25);
        assert_eq!(compare.no_data(), NoDataPolicy::Fail);
        assert_eq!(compare.weight(), 1.0);
    }
}
