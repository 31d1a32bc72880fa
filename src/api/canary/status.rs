//! The `status` of a Canary: the phase of the rollout, the traffic weight and check counts,
//! and the revisions serin last saw and promoted, with Flagger's names.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::schema;

use super::analysis::AlertSeverity;

/// Observed state of a Canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::drop_property_defaults)]
pub struct CanaryStatus {
    /// Phase of the rollout.
    #[serde(default)]
    pub phase: CanaryPhase,

    /// Traffic weight, in percent, currently routed to the canary.
    #[serde(default)]
    pub canary_weight: i32,

    /// Failed checks in the current analysis.
    #[serde(default)]
    pub failed_checks: i32,

    /// Analysis steps completed in the current A/B or blue/green analysis.
    #[serde(default)]
    pub iterations: i32,

    /// Revision hash of the target's pod template and tracked configs last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,

    /// Revision hash last promoted to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,

    /// Hash of each tracked ConfigMap and Secret, by kind/name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,

    /// Time of the last phase change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// Generation of the Canary spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions, among them Ready and Promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Human-readable explanation of the phase, e.g. why the rollout failed (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Start of the current analysis: when the revision was detected, then when its first
    /// traffic step was routed (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_start_time: Option<Time>,

    /// Time of the last analysis step (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_time: Option<Time>,

    /// Marginal steps in the current analysis: neither passed nor failed (serin addition).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub marginal_checks: i32,

    /// The last releases, newest first, at most ten: what was promoted or rolled back,
    /// when and why (serin addition; `serin history` shows it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<Release>,

    /// Notifications decided but not yet delivered to every alert that wants them
    /// (serin addition). Each is recorded with the transition that caused it, in the same
    /// status write, and removed once delivered or given up, so a restart resends what
    /// is left and nothing twice. Holds alert names, never webhook addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_notifications: Vec<PendingNotification>,

    /// The sequential test of the current (or last) analysis: the counters it counts
    /// from and its last evidence (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential_test: Option<SequentialTestStatus>,
}

/// Where the sequential test stands (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialTestStatus {
    /// When the evidence below was evaluated (updated when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The counts since the analysis started and the evidence for and against the
    /// canary, as one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// The raw counter values at the first traffic of the analysis, which the counts are
    /// measured from (kept here so that a restarted controller measures from the same
    /// point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<CounterReadings>,
}

/// Raw request counters of the canary and the primary at one instant.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterReadings {
    pub canary: WorkloadCounters,
    pub primary: WorkloadCounters,
}

/// Raw request counters of one workload (sums over its series).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadCounters {
    /// Requests served.
    pub requests: u64,
    /// Failed (5xx) requests among them.
    pub errors: u64,
    /// Requests slower than the latency bucket, when latency is tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<u64>,
    /// Requests in the latency histogram, when latency is tested (the histogram and the
    /// request counter are separate series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed: Option<u64>,
}

/// How many releases `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// One finished release in `status.history`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// Revision hash of the release.
    pub revision: String,
    /// Container images of the release, when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// Succeeded (promoted) or Failed (rolled back).
    pub outcome: CanaryPhase,
    /// When the release ended.
    pub time: Time,
    /// Why it ended so: the rollback's reason, or the promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A notification still to be delivered (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingNotification {
    /// Idempotency key of the event that caused it.
    pub key: String,
    /// Event reason, e.g. RolledBack or Succeeded.
    pub reason: String,
    /// Severity of the event: info, warn or error.
    pub severity: AlertSeverity,
    /// Phase after the transition.
    pub phase: CanaryPhase,
    /// Revision the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Image of the target's first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Canary weight after the transition.
    #[serde(default)]
    pub weight: i32,
    /// The metric, webhook, Job or gate that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The value it measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The metric's accepted range, e.g. ">= 99".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
    /// One readable sentence.
    pub message: String,
    /// When the transition was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Alerts (by name; `(default)` for the provider of `serin run`) still to receive it.
    pub targets: Vec<String>,
}

/// Phase of a Canary's rollout, with Flagger's names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = schema::drop_description)]
pub enum CanaryPhase {
    /// Creating the primary, Services and routes.
    #[default]
    Initializing,
    /// Primary serves all traffic; waiting for a new revision.
    Initialized,
    /// Waiting for an approval or a confirm webhook.
    Waiting,
    /// Analysis underway.
    Progressing,
    /// Waiting for approval of the promotion.
    WaitingPromotion,
    /// Copying the canary to the primary.
    Promoting,
    /// Routing all traffic back to the promoted primary.
    Finalising,
    /// The last revision was promoted.
    Succeeded,
    /// The last revision was rolled back.
    Failed,
    /// The Canary is being deleted.
    Terminating,
}

impl CanaryPhase {
    /// The name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryPhase::Initializing => "Initializing",
            CanaryPhase::Initialized => "Initialized",
            CanaryPhase::Waiting => "Waiting",
            CanaryPhase::Progressing => "Progressing",
            CanaryPhase::WaitingPromotion => "WaitingPromotion",
            CanaryPhase::Promoting => "Promoting",
            CanaryPhase::Finalising => "Finalising",
            CanaryPhase::Succeeded => "Succeeded",
            CanaryPhase::Failed => "Failed",
            CanaryPhase::Terminating => "Terminating",
        }
    }
}

impl std::fmt::Display for CanaryPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}
