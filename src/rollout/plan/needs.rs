//! What a reconcile must run before it plans: the metric analysis when it is due, the
//! webhooks of the current gate, the conformance-test Jobs, and the sequential test's
//! counters. The I/O itself is the controller's; this decides which.

use super::*;

/// What the controller must run before planning: the analysis when it is due and the
/// canary can be judged (it is ready and runs the revision under analysis).
pub fn needs(canary: &Canary, observed: &Observed, now: Timestamp) -> Needs {
    let judged = observed.target.as_ref().is_some_and(|t| {
        t.ready.is_ready()
            && canary
                .status
                .as_ref()
                .and_then(|s| s.last_applied_spec.as_deref())
                == Some(t.revision.as_str())
    });
    let analysis = judged && analysis_due(canary, now);
    let before_traffic = judged
        && !canary.spec.suspend
        && canary
            .status
            .as_ref()
            .is_some_and(|s| s.phase == CanaryPhase::Progressing && s.canary_weight == 0);
    let sequential = judged
        && canary.spec.analysis.sequential().enabled
        && canary.status.as_ref().is_some_and(|s| {
            matches!(
                s.phase,
                CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
            )
        });
    Needs {
        analysis,
        webhooks: webhook_needs(canary, observed, now, analysis),
        conformance: conformance_run(canary, judged, before_traffic),
        sequential,
    }
}

/// Which conformance tests this reconcile starts and reads, if any.
fn conformance_run(canary: &Canary, judged: bool, before_traffic: bool) -> Option<ConformanceRun> {
    let status = canary.status.as_ref()?;
    let analysis = &canary.spec.analysis;
    let run = if before_traffic {
        ConformanceRun::BeforeTraffic
    } else if judged
        && !canary.spec.suspend
        && status.phase == CanaryPhase::Progressing
        && status.canary_weight > 0
        && !is_iterated(canary)
    {
        ConformanceRun::Step(u32::try_from(status.canary_weight).unwrap_or(0))
    } else if status.phase == CanaryPhase::Finalising && !canary.spec.suspend {
        ConformanceRun::AfterPromotion
    } else {
        return None;
    };
    analysis.has_conformance(run.when()).then_some(run)
}

/// Which gate, check and rollback webhooks to call this tick, following Flagger's
/// order: `confirm-rollout` before a revision starts (and every interval while it
/// waits), `pre-rollout` and `confirm-traffic-increase` before the first traffic,
/// `confirm-traffic-increase` or `confirm-promotion` with every analysis round, and
/// `rollback` whenever one of these runs while a release is in flight.
fn webhook_needs(
    canary: &Canary,
    observed: &Observed,
    now: Timestamp,
    analysis: bool,
) -> WebhookNeeds {
    let mut needs = WebhookNeeds::default();
    let (Some(status), Some(target)) = (&canary.status, &observed.target) else {
        return needs;
    };
    if canary.spec.suspend || canary.spec.skip_analysis {
        return needs;
    }
    let new_revision = status.last_applied_spec.as_deref() != Some(target.revision.as_str());
    let interval_passed = status.last_analysis_time.is_none()
        || since(&status.last_analysis_time, now) >= canary.spec.analysis.interval();
    let weight = u32::try_from(status.canary_weight).unwrap_or(0);
    let iterated = is_iterated(canary);
    match status.phase {
        CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed => {
            needs.confirm_rollout = new_revision;
        }
        CanaryPhase::Waiting => {
            needs.confirm_rollout = new_revision || interval_passed;
            needs.rollback = !new_revision && interval_passed;
        }
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion if new_revision => {
            needs.confirm_rollout = true;
        }
        CanaryPhase::Progressing if iterated && status.last_analysis_time.is_none() => {
            // Blue/green and A/B testing: the `pre-rollout` webhooks pass before the
            // iterations start (before matching users or load tests reach the canary).
            // A failure is retried an interval later, counted from when it was seen.
            let retry_due = status.failed_checks == 0
                || since(&status.analysis_start_time, now) >= canary.spec.analysis.interval();
            let start_due = target.ready.is_ready() && retry_due;
            needs.pre_rollout = start_due;
            needs.rollback = start_due;
        }
        CanaryPhase::Progressing if weight == 0 && !iterated => {
            let first_step_due = target.ready.is_ready() && interval_passed;
            needs.pre_rollout = first_step_due;
            needs.confirm_traffic_increase = first_step_due;
            needs.rollback = first_step_due;
        }
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion if analysis && iterated => {
            // No traffic increase to confirm: the promotion is confirmed in the round
            // that completes the iterations (and while waiting for it).
            needs.rollback = true;
            needs.confirm_promotion = status.phase == CanaryPhase::WaitingPromotion
                || status.iterations + 1 >= promotion::iterations(canary);
        }
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion if analysis => {
            needs.rollback = true;
            if status.phase == CanaryPhase::Progressing
                && weight < canary.spec.analysis.max_weight()
            {
                needs.confirm_traffic_increase = true;
            } else {
                needs.confirm_promotion = true;
            }
        }
        _ => {}
    }
    let has = |kind| crate::gates::has(canary, kind);
    WebhookNeeds {
        confirm_rollout: needs.confirm_rollout && has(WebhookType::ConfirmRollout),
        pre_rollout: needs.pre_rollout && has(WebhookType::PreRollout),
        confirm_traffic_increase: needs.confirm_traffic_increase
            && has(WebhookType::ConfirmTrafficIncrease),
        confirm_promotion: needs.confirm_promotion && has(WebhookType::ConfirmPromotion),
        rollback: needs.rollback && has(WebhookType::Rollback),
    }
}
