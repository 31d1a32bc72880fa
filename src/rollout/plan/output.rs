//! What one reconcile's plan says: the status to write, what to do with the primary,
//! the target's replicas and the routes, and the events to record.

use std::time::Duration;

use crate::api::{CanaryPhase, CanaryStatus};

/// What to do with the primary Deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryAction {
    Keep,
    /// Create the primary as a copy of the target (first initialization).
    Bootstrap,
    /// Copy the target's pod template and configs to the primary.
    Promote,
}

/// What to do with the target's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetScale {
    Keep,
    Up,
    Down,
}

/// How bad an event is, as notifiers filter them (Flagger's alert severities).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

/// An event to record on the Canary, with the fields a notifier needs so that it never
/// parses the message.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The kind of transition (the Kubernetes Event reason).
    pub reason: &'static str,
    pub severity: Severity,
    /// The revision the event is about.
    pub revision: Option<String>,
    /// The canary weight after the transition.
    pub weight: i32,
    /// The metric (or gate) that decided, and the value it measured.
    pub metric: Option<String>,
    pub value: Option<f64>,
    /// One readable sentence.
    pub message: String,
    /// The same transition planned again (after a restart, or from a stale cache) gets
    /// the same key, so that it is published once.
    pub key: String,
    /// Published as a Kubernetes Event but not notified: a gate webhook with
    /// `muteAlert` closed the gate (Flagger's `muteAlert`).
    pub muted: bool,
}

impl Event {
    pub fn warning(&self) -> bool {
        self.severity != Severity::Info
    }
}

/// What the Services and routes should say this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// Write nothing (suspended, or no target): whatever is there stays.
    Untouched,
    /// The primary is not ready yet: create the `-primary` and `-canary` Services, but
    /// leave the apex Service and the route as they are, so that users keep reaching
    /// whatever served them before.
    Prepare,
    /// The apex Service and the route, sending this share to the canary.
    Route { canary_weight: u32 },
}

/// The decision of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status to record. It is written before anything else, so a decision is
    /// durable before any route or scale reflects it.
    pub status: CanaryStatus,
    pub primary: PrimaryAction,
    pub target: TargetScale,
    pub traffic: Traffic,
    pub events: Vec<Event>,
    /// Mirror this percentage of the primary's traffic to the canary (Istio `mirror`,
    /// the Gateway API `RequestMirror` filter): blue/green with `analysis.mirror`, while
    /// its iterations run against a ready canary, before any user is routed to it.
    pub mirror: Option<u32>,
    /// The release ended (promoted or rolled back) in this tick: call the `post-rollout`
    /// webhooks with this phase once the status is written.
    pub post_rollout: Option<CanaryPhase>,
    /// When to look again even if nothing changes.
    pub requeue: Duration,
}
