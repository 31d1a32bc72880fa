//! The rollout state machine: a pure function from the Canary (spec and status), what
//! was observed in the cluster, the gates, the analysis verdict and the time, to the
//! next status and the changes to make. It never sees a client, so every transition is
//! tested with plain values and a fake clock.
//!
//! Everything the machine remembers is in the status it returns: a controller killed at
//! any moment resumes from the last status it wrote.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Canary, CanaryPhase, CanaryStatus, ConformanceWhen, WebhookType};
use crate::rollout::conditions::{self, reasons};

pub use crate::rollout::verdict::{Finding, Verdict};

mod builder;
mod input;
mod needs;
mod output;
mod progress;
mod promotion;
mod sequential;

pub use input::{
    Conformance, ConformanceRun, Gates, Input, Needs, Observed, Primary, Readiness, Target,
    WebhookNeeds, Webhooks, webhook_gate,
};
pub use needs::needs;
pub use output::{Event, Plan, PrimaryAction, Severity, TargetScale, Traffic};

use builder::Builder;
use progress::progress;
use promotion::{iterations, promote, promote_now, switch_and_promote};

/// How often to look while waiting for something to become ready.
const POLL: Duration = Duration::from_secs(1);

/// How often a Canary waiting for a Deployment to become ready is planned again. The
/// Deployment watch wakes it at every change of the target or the primary, so this is
/// only a safety net: polling every second would reconcile each of a thousand Canaries
/// waiting on a busy cluster once a second for nothing.
pub(crate) const READINESS_POLL: Duration = Duration::from_secs(5);

fn since(t: &Option<Time>, now: Timestamp) -> Duration {
    t.as_ref()
        .map(|t| Duration::try_from(now.duration_since(t.0)).unwrap_or_default())
        .unwrap_or_default()
}

/// Whether the checks should run now: the rollout is progressing (or waiting for its
/// promotion to be approved, when the canary keeps its traffic and must keep earning
/// it), traffic reaches the canary, and an interval has passed since the last round.
pub fn analysis_due(canary: &Canary, now: Timestamp) -> bool {
    let Some(status) = &canary.status else {
        return false;
    };
    matches!(
        status.phase,
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    ) && (status.canary_weight > 0
        || (is_blue_green(canary) && status.last_analysis_time.is_some()))
        && since(&status.last_analysis_time, now) >= canary.spec.analysis.interval()
}

/// Whether the strategy is blue/green, as Flagger chooses it: `iterations` without
/// `match` and without weights (and always with `provider: kubernetes`). The checks run
/// `iterations` rounds against the canary Service while users stay on the primary; then
/// all traffic switches to the canary while the primary is updated behind it, and
/// switches back to the promoted primary.
pub fn is_blue_green(canary: &Canary) -> bool {
    let analysis = &canary.spec.analysis;
    canary.provider() == crate::api::Provider::Kubernetes
        || (analysis.iterations.is_some_and(|n| n > 0)
            && analysis.match_.is_empty()
            && !analysis.is_weighted())
}

/// Whether the strategy is A/B testing, as Flagger chooses it: `iterations` with
/// `match` and without weights. Requests matching the conditions go to the canary (the
/// status records weight 100, the weight of the matching route) for `iterations`
/// rounds; everyone else stays on the primary; then the canary is promoted.
pub fn is_ab_test(canary: &Canary) -> bool {
    let analysis = &canary.spec.analysis;
    canary.provider() != crate::api::Provider::Kubernetes
        && analysis.iterations.is_some_and(|n| n > 0)
        && !analysis.match_.is_empty()
        && !analysis.is_weighted()
}

/// Whether the analysis runs `iterations` rounds rather than weight steps: blue/green
/// and A/B testing.
pub fn is_iterated(canary: &Canary) -> bool {
    is_blue_green(canary) || is_ab_test(canary)
}

/// The share mirrored to the canary by a plan that routes `traffic` with `status`:
/// blue/green with `analysis.mirror` on a mesh, while its iterations run against a
/// ready canary that no user reaches yet.
pub fn mirrored(canary: &Canary, status: &CanaryStatus, traffic: &Traffic) -> Option<u32> {
    let analysis = &canary.spec.analysis;
    let analysing = matches!(
        status.phase,
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    ) && status.last_analysis_time.is_some();
    (analysis.mirror
        && canary.provider() != crate::api::Provider::Kubernetes
        && is_blue_green(canary)
        && analysing
        && *traffic == Traffic::Route { canary_weight: 0 }
        && status.canary_weight == 0)
        .then(|| analysis.mirror_weight())
        .filter(|w| *w > 0)
}

/// The share of traffic the canary may get: what the status says, but only while the
/// canary is ready and runs the revision under analysis. A canary that stops being ready
/// loses its traffic at once and gets it back when it recovers; pods of a newer,
/// unanalysed revision get none.
pub fn routed_weight(status: &CanaryStatus, target: &Target) -> u32 {
    let analysed = status.last_applied_spec.as_deref() == Some(target.revision.as_str());
    if analysed && target.ready.is_ready() {
        u32::try_from(status.canary_weight).unwrap_or(0).min(100)
    } else {
        0
    }
}

/// The next weight after `current`: the next of stepWeights, or current + stepWeight,
/// capped at maxWeight.
pub fn next_weight(canary: &Canary, current: u32) -> u32 {
    let analysis = &canary.spec.analysis;
    let max = analysis.max_weight();
    let next = if analysis.step_weights.is_empty() {
        let step = analysis
            .step_weight
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(max);
        current + step.max(1)
    } else {
        analysis
            .step_weights
            .iter()
            .filter_map(|w| u32::try_from(*w).ok())
            .find(|w| *w > current)
            .unwrap_or(max)
    };
    next.min(max)
}

/// Decides the next step of one Canary.
pub fn plan(input: &Input<'_>) -> Plan {
    let canary = input.canary;
    let current = canary.status.clone().unwrap_or_default();
    let mut b = Builder {
        input,
        status: current.clone(),
        primary: PrimaryAction::Keep,
        target: TargetScale::Keep,
        traffic: None,
        events: Vec::new(),
        post_rollout: None,
        requeue: canary.spec.analysis.interval().max(POLL),
    };

    let Some(target) = &input.observed.target else {
        b.status.message = Some(format!(
            "target {} {} not found: create it or fix spec.targetRef",
            canary.spec.target_ref.kind, canary.spec.target_ref.name
        ));
        b.traffic = Some(Traffic::Untouched);
        b.requeue = Duration::from_secs(10);
        return b.finish();
    };

    if canary.spec.suspend {
        // Nothing is written while suspended: an operator may be changing Services or
        // routes by hand during an incident.
        b.status.message =
            Some("suspended: no changes are made until spec.suspend is false".into());
        b.traffic = Some(Traffic::Untouched);
        return b.finish();
    }

    match current.phase {
        CanaryPhase::Initializing | CanaryPhase::Terminating => initialize(&mut b, target),
        CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed => {
            if current.last_applied_spec.as_deref() != Some(&target.revision) {
                b.start(&target.revision);
            } else {
                // Settled: keep the target scaled down (a restart may have stopped short).
                b.target = TargetScale::Down;
                b.requeue = Duration::from_secs(60);
            }
        }
        CanaryPhase::Waiting => {
            if current.last_applied_spec.as_deref() != Some(&target.revision) {
                b.start(&target.revision);
            } else if input.gates.abort {
                b.rollback(&aborted(target));
            } else if let Some(why) = &input.webhooks.rollback {
                b.rollback(why);
            } else if start_open(canary, input) {
                // The canary is scaled up only now: its progress deadline starts now, not
                // when the revision began waiting for approval.
                b.status.analysis_start_time = Some(Time(input.now));
                b.status.last_analysis_time = None;
                b.target = TargetScale::Up;
                b.event(
                    Severity::Info,
                    reasons::APPROVED,
                    format!("Start of {} approved", target.revision),
                );
                b.phase(
                    CanaryPhase::Progressing,
                    format!("starting the canary {}", target.revision),
                );
                b.requeue = POLL;
            } else {
                if let Some(Err(why)) = &input.webhooks.confirm_rollout {
                    // Asked again one interval later, as Flagger polls its gates.
                    b.status.last_analysis_time = Some(Time(input.now));
                    b.status.message = Some(format!(
                        "waiting for the confirm-rollout webhooks to start {}: {why}",
                        target.revision
                    ));
                }
                // Nothing runs before the start is allowed: a GitOps tool re-applying
                // the target's replicas must not start the canary's pods early.
                b.target = TargetScale::Down;
                b.requeue = POLL;
            }
        }
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion => {
            progress(&mut b, target);
            sequential::requeue(&mut b);
        }
        CanaryPhase::Promoting => promote(&mut b, target),
        CanaryPhase::Finalising => finalise(&mut b),
    }
    b.finish()
}

/// The promotion is complete: all traffic is on the primary, which runs the analysed
/// revision (even if the target changed since; a newer revision starts its own analysis
/// next). The `after-promotion` conformance tests run against it first: their failure is
/// reported (a Warning event, the status and the history), since the revision it
/// replaced is gone.
fn finalise(b: &mut Builder<'_>) {
    let current = b.status.clone();
    let promoted = current.last_applied_spec.clone().unwrap_or_default();
    b.status.canary_weight = 0;
    b.target = TargetScale::Down;
    let mut outcome = "promoted".to_string();
    if b.input
        .canary
        .spec
        .analysis
        .has_conformance(ConformanceWhen::AfterPromotion)
    {
        match &b.input.observed.conformance {
            Conformance::Passed => {
                outcome = "promoted; the after-promotion conformance tests passed".into();
            }
            Conformance::Failed(why) => {
                b.finding(
                    Severity::Error,
                    reasons::CHECK_FAILED,
                    format!("Promoted {promoted}, but after promotion {}", why.message),
                    why,
                );
                outcome = format!("promoted, but after promotion {}", why.message);
            }
            Conformance::Running | Conformance::NotRead => {
                b.status.message = Some(format!(
                    "running the after-promotion conformance tests of {promoted} against the primary"
                ));
                b.requeue = POLL;
                return;
            }
        }
    }
    b.status.last_promoted_spec = Some(promoted.clone());
    b.event(
        Severity::Info,
        reasons::SUCCEEDED,
        format!("Promotion of {promoted} completed, canary scaled to zero"),
    );
    for e in &mut b.events {
        e.revision = Some(promoted.clone());
    }
    b.phase(
        CanaryPhase::Succeeded,
        format!("revision {promoted} {outcome}"),
    );
    b.post_rollout = Some(CanaryPhase::Succeeded);
    b.remember(&promoted, CanaryPhase::Succeeded, outcome);
    b.requeue = POLL;
}

/// Why a webhook gate is closed, for status and events.
fn closed_because(why: Option<Finding>, kind: &str) -> String {
    why.map(|f| f.message)
        .unwrap_or_else(|| format!("the {kind} webhooks have not answered yet"))
}

/// Whether the rollout of the current revision may start: the manual approval if the
/// spec asks for one, and every `confirm-rollout` webhook.
fn start_open(canary: &Canary, input: &Input<'_>) -> bool {
    (!canary.spec.approvals().start || input.gates.start_approved)
        && webhook_gate(canary, &input.webhooks, WebhookType::ConfirmRollout).is_ok()
}

/// Whether the promotion may go ahead: the manual approval if the spec asks for one, and
/// every `confirm-promotion` webhook.
fn promotion_open(canary: &Canary, input: &Input<'_>) -> bool {
    (!canary.spec.approvals().promotion || input.gates.promotion_approved)
        && webhook_gate(canary, &input.webhooks, WebhookType::ConfirmPromotion).is_ok()
}

fn aborted(target: &Target) -> Finding {
    Finding::gate(
        "abort",
        format!("aborted by annotation for revision {}", target.revision),
    )
}

fn initialize(b: &mut Builder<'_>, target: &Target) {
    let observed = b.input.observed;
    match &observed.primary {
        None => {
            b.primary = PrimaryAction::Bootstrap;
            b.traffic = Some(Traffic::Prepare);
            b.phase(CanaryPhase::Initializing, "creating the primary");
            b.requeue = POLL;
        }
        Some(primary) => match &primary.ready {
            Readiness::Ready => {
                // What the primary runs is what was promoted, whatever the target says
                // now: a target changed during the bootstrap is a new revision, analysed
                // next, never taken as already promoted.
                let serving = primary
                    .revision
                    .clone()
                    .unwrap_or_else(|| target.revision.clone());
                b.target = TargetScale::Down;
                b.status.canary_weight = 0;
                b.status.last_applied_spec = Some(serving.clone());
                b.status.last_promoted_spec = Some(serving.clone());
                b.event(
                    Severity::Info,
                    reasons::INITIALIZED,
                    format!("Initialization done: the primary serves {serving}"),
                );
                if let Some(e) = b.events.last_mut() {
                    e.revision = Some(serving.clone());
                }
                b.phase(
                    CanaryPhase::Initialized,
                    format!("primary ready with {serving}"),
                );
                b.requeue = if serving == target.revision {
                    Duration::from_secs(60)
                } else {
                    POLL
                };
            }
            Readiness::NotReady(why) => {
                // Users keep reaching whatever served them until the primary can.
                b.traffic = Some(Traffic::Prepare);
                b.phase(
                    CanaryPhase::Initializing,
                    format!("waiting for the primary: {why}"),
                );
                b.requeue = READINESS_POLL;
            }
        },
    }
}
