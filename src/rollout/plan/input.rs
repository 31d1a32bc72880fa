//! What the plan is a function of: the workloads and gates observed in the cluster,
//! what the webhooks and conformance tests answered, and what the controller must
//! observe or run before the next plan ([`Needs`]). Plain values, no client.

use jiff::Timestamp;

use super::{Finding, Verdict};
use crate::api::{Canary, ConformanceWhen, WebhookType};

/// Whether a workload can take traffic, and if not, why.
#[derive(Clone, Debug, PartialEq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// The target (the workload the user changes; it serves as the canary).
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Revision of its pod template and tracked configs.
    pub revision: String,
    /// Readiness once scaled up.
    pub ready: Readiness,
}

/// The primary serin derives from the target.
#[derive(Clone, Debug, PartialEq)]
pub struct Primary {
    /// Revision the primary runs (the annotation serin writes on it).
    pub revision: Option<String>,
    pub ready: Readiness,
}

/// Where the conformance-test Jobs of the revision under analysis stand.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Conformance {
    /// Not read this tick ([`Needs::conformance`] did not ask for it).
    #[default]
    NotRead,
    Running,
    Passed,
    /// The first failed test, quoting the failing container's termination message.
    Failed(Finding),
}

/// Which run of the conformance tests a reconcile starts and reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConformanceRun {
    /// The tests that run once per revision, before any traffic.
    BeforeTraffic,
    /// The tests that run at each traffic weight: this one.
    Step(u32),
    /// The tests that run against the promoted primary.
    AfterPromotion,
}

impl ConformanceRun {
    /// The `when` of the tests that belong to this run.
    pub fn when(self) -> ConformanceWhen {
        match self {
            ConformanceRun::BeforeTraffic => ConformanceWhen::BeforeTraffic,
            ConformanceRun::Step(_) => ConformanceWhen::EachStep,
            ConformanceRun::AfterPromotion => ConformanceWhen::AfterPromotion,
        }
    }

    /// How the run is named in its Jobs' label and environment: `before-traffic`,
    /// `step-<weight>` or `after-promotion`.
    pub fn name(self) -> String {
        match self {
            ConformanceRun::BeforeTraffic => "before-traffic".into(),
            ConformanceRun::Step(weight) => format!("step-{weight}"),
            ConformanceRun::AfterPromotion => "after-promotion".into(),
        }
    }
}

/// What the cluster looks like now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// `None` when the target does not exist.
    pub target: Option<Target>,
    /// `None` before the primary is created.
    pub primary: Option<Primary>,
    /// The conformance tests of the revision under analysis, when read.
    pub conformance: Conformance,
    /// The container images of the target, for the release history.
    pub images: Vec<String>,
}

/// Approvals and aborts given for the target's current revision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Gates {
    pub start_approved: bool,
    /// The weight whose increase is approved (`serin.dev/approve-traffic-increase:
    /// <revision>@<weight>`): one approval lets exactly one step through, the one that
    /// leaves this weight.
    pub traffic_increase_approved_at: Option<u32>,
    pub promotion_approved: bool,
    pub abort: bool,
}

impl Gates {
    /// Whether the step that leaves `weight` is approved.
    pub fn traffic_increase_approved(&self, weight: u32) -> bool {
        self.traffic_increase_approved_at == Some(weight)
    }
}

/// What the controller must observe or run before the next plan (its only I/O besides
/// reading the cluster).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Run the metric checks, the comparisons, the sequential test and the `rollout`
    /// webhooks.
    pub analysis: bool,
    /// Call the gate, check and rollback webhooks of these kinds (only kinds the Canary
    /// declares).
    pub webhooks: WebhookNeeds,
    /// Start (if not started) and read these conformance-test Jobs of the revision in
    /// `status.lastAppliedSpec`: before traffic once the canary is ready, at each weight
    /// of a weighted canary, and while a promotion finalises.
    pub conformance: Option<ConformanceRun>,
    /// Read the raw request counters for the sequential test (at every reconcile of an
    /// analysis with `analysis.sequential` on, the first traffic step included).
    pub sequential: bool,
}

/// The webhook kinds to call before planning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookNeeds {
    pub confirm_rollout: bool,
    pub pre_rollout: bool,
    pub confirm_traffic_increase: bool,
    pub confirm_promotion: bool,
    pub rollback: bool,
}

impl WebhookNeeds {
    pub fn kinds(&self) -> Vec<WebhookType> {
        [
            (self.confirm_rollout, WebhookType::ConfirmRollout),
            (self.pre_rollout, WebhookType::PreRollout),
            (
                self.confirm_traffic_increase,
                WebhookType::ConfirmTrafficIncrease,
            ),
            (self.confirm_promotion, WebhookType::ConfirmPromotion),
            (self.rollback, WebhookType::Rollback),
        ]
        .into_iter()
        .filter_map(|(needed, kind)| needed.then_some(kind))
        .collect()
    }
}

/// What the webhooks called this tick answered, one entry per kind; `None` when the kind
/// was not called this tick. A gate kind the Canary declares is open only when it was
/// called and every webhook of it passed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Webhooks {
    pub confirm_rollout: Option<Result<(), Finding>>,
    pub pre_rollout: Option<Result<(), Finding>>,
    pub confirm_traffic_increase: Option<Result<(), Finding>>,
    pub confirm_promotion: Option<Result<(), Finding>>,
    /// A `rollback` webhook answered 2xx.
    pub rollback: Option<Finding>,
}

impl Webhooks {
    fn result(&self, kind: WebhookType) -> Option<&Result<(), Finding>> {
        match kind {
            WebhookType::ConfirmRollout => self.confirm_rollout.as_ref(),
            WebhookType::PreRollout => self.pre_rollout.as_ref(),
            WebhookType::ConfirmTrafficIncrease => self.confirm_traffic_increase.as_ref(),
            WebhookType::ConfirmPromotion => self.confirm_promotion.as_ref(),
            _ => None,
        }
    }
}

/// Whether the webhooks of a gate kind let the rollout through: open when the Canary has
/// none of that kind; otherwise only when they were called this tick and all passed.
/// `Err` says why it is closed (not called yet counts as closed, with no finding).
pub fn webhook_gate(
    canary: &Canary,
    webhooks: &Webhooks,
    kind: WebhookType,
) -> Result<(), Option<Finding>> {
    if !crate::gates::has(canary, kind) {
        return Ok(());
    }
    match webhooks.result(kind) {
        Some(Ok(())) => Ok(()),
        Some(Err(f)) => Err(Some(f.clone())),
        None => Err(None),
    }
}

/// Everything the plan is a function of.
pub struct Input<'a> {
    pub canary: &'a Canary,
    pub observed: &'a Observed,
    pub gates: Gates,
    /// The analysis verdict, present when the controller ran the checks because
    /// [`analysis_due`] said so.
    pub verdict: Option<Verdict>,
    /// What the webhooks [`needs`] asked for answered.
    pub webhooks: Webhooks,
    /// The raw request counters, read when [`needs`] asked for them.
    pub counters: Option<Result<crate::api::CounterReadings, String>>,
    pub now: Timestamp,
}
