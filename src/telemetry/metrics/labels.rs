//! What the series are labelled with: Flagger's label sets and values (`canary_status`'s
//! value of a phase, the deployment strategy and analysis status of the outcome
//! counters) and serin's own (the reconcile error, the slot lane).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::api::CanaryPhase;

/// Value of `canary_status` for a phase, as Flagger computes it: `0` while the analysis is
/// `Progressing`, `2` once `Failed`, and `1` for every other phase (Flagger's "successful",
/// which also covers Initializing, Initialized, Waiting, WaitingPromotion, Promoting,
/// Finalising, Succeeded and Terminating).
pub fn status_value(phase: CanaryPhase) -> f64 {
    match phase {
        CanaryPhase::Progressing => 0.0,
        CanaryPhase::Failed => 2.0,
        _ => 1.0,
    }
}

/// How a rollout shifts traffic: the `deployment_strategy` label of the outcome counters,
/// with Flagger's values.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DeploymentStrategy {
    /// Progressive traffic shifting by weight (`canary`).
    Canary,
    /// Iterations with all test traffic on the canary, then a switch (`blue-green`).
    BlueGreen,
    /// Iterations with traffic matched by headers or cookies (`ab-testing`).
    AbTesting,
}

impl DeploymentStrategy {
    pub(super) const ALL: [DeploymentStrategy; 3] =
        [Self::Canary, Self::BlueGreen, Self::AbTesting];

    /// The label value, as Flagger writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::BlueGreen => "blue-green",
            Self::AbTesting => "ab-testing",
        }
    }
}

impl EncodeLabelValue for DeploymentStrategy {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Whether the analysis ran before the outcome: the `analysis_status` label of the
/// outcome counters, with Flagger's values.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AnalysisStatus {
    /// The analysis ran (`completed`).
    Completed,
    /// `skipAnalysis` was set and the revision was promoted without one (`skipped`).
    Skipped,
}

impl AnalysisStatus {
    pub(super) const ALL: [AnalysisStatus; 2] = [Self::Completed, Self::Skipped];

    /// The label value, as Flagger writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Skipped => "skipped",
        }
    }
}

impl EncodeLabelValue for AnalysisStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// How a rollout ended: picks `canary_successes_total` or `canary_failures_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// The revision was promoted.
    Succeeded,
    /// The revision was rolled back.
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CanaryLabels {
    pub(super) name: String,
    pub(super) namespace: String,
}

impl CanaryLabels {
    pub(super) fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct WorkloadLabels {
    pub(super) workload: String,
    pub(super) namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NamespaceLabels {
    pub(super) namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MetricLabels {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) deployment_strategy: DeploymentStrategy,
    pub(super) analysis_status: AnalysisStatus,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ErrorLabels {
    pub(super) error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LaneLabels {
    pub(super) lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct InfoLabels {
    pub(super) version: String,
    pub(super) mesh_provider: String,
}
