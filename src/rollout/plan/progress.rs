//! The analysis of a revision: the first step once the conformance tests and the
//! `pre-rollout`/`confirm-traffic-increase` webhooks allow it, then one verdict per
//! interval (step, hold, count a failed check, roll back), blue/green rounds, and the
//! approvals and gates on the way to promotion.

use super::*;
use crate::analysis::counts::Decision;

pub(super) fn progress(b: &mut Builder<'_>, target: &Target) {
    let input = b.input;
    let canary = input.canary;
    let status = b.status.clone();
    let waiting_promotion = status.phase == CanaryPhase::WaitingPromotion;
    // Keep asking for the canary's replicas: a restart between the status write and the
    // scale-up, or someone scaling it down, must not leave the analysis without pods.
    b.target = TargetScale::Up;
    if status.last_applied_spec.as_deref() != Some(&target.revision) {
        b.restart(&target.revision, "analysis");
        return;
    }
    if input.gates.abort {
        b.rollback(&aborted(target));
        return;
    }
    if let Some(why) = &input.webhooks.rollback {
        b.rollback(why);
        return;
    }
    if let Readiness::NotReady(why) = &target.ready {
        // The canary gets no traffic while it is not ready (see `routed_weight`). The
        // deadline counts from the last time it was seen ready: the last step or round
        // (taken only when it is ready), else the start of this analysis. A canary that
        // stops being ready late in a long analysis gets the whole deadline to recover,
        // as a Deployment's progress deadline does.
        let last_ready = status
            .last_analysis_time
            .clone()
            .or_else(|| status.analysis_start_time.clone());
        let waited = since(&last_ready, input.now);
        if waited > canary.spec.progress_deadline() {
            b.rollback(&Finding::gate(
                "progress-deadline",
                format!(
                    "canary not ready within the progress deadline of {}s: {why}",
                    canary.spec.progress_deadline().as_secs()
                ),
            ));
        } else {
            b.status.message = Some(format!(
                "the canary is not ready, so it gets no traffic: {why}"
            ));
            b.requeue = READINESS_POLL;
        }
        return;
    }
    let threshold = canary.spec.analysis.threshold();
    let weight = u32::try_from(status.canary_weight).unwrap_or(0);
    let blue_green = is_blue_green(canary);
    let ab_test = is_ab_test(canary);
    // Blue/green and A/B testing run `iterations` rounds rather than weight steps.
    let iterated = is_iterated(canary);
    if iterated && status.last_analysis_time.is_none() {
        if !iterations_may_start(b, target, threshold) {
            return;
        }
        b.status.analysis_start_time = Some(Time(input.now));
        b.status.last_analysis_time = Some(Time(input.now));
        super::sequential::record_start(b);
        if ab_test {
            // The canary is ready: requests that match `analysis.match` go to it from
            // now on (the matching route's weight); everyone else stays on the primary.
            b.status.canary_weight = 100;
            b.event(
                Severity::Info,
                reasons::ADVANCED,
                format!(
                    "Advance {}: requests matching the A/B conditions are routed to the canary",
                    target.revision
                ),
            );
            b.status.message = Some(format!(
                "A/B testing {} on the matching requests: iteration 0/{}",
                target.revision,
                iterations(canary)
            ));
        } else {
            // The canary is ready: its rounds start now, against the canary Service;
            // users stay on the primary until the switch.
            b.status.message = Some(format!(
                "analysing {} against the canary Service: iteration 0/{}",
                target.revision,
                iterations(canary)
            ));
        }
        b.requeue = b.interval();
        return;
    }
    if weight == 0 && !iterated {
        // The canary is ready: route the first step of traffic to it once the
        // `pre-rollout` and `confirm-traffic-increase` webhooks pass. No metric checks run
        // at weight 0, since no traffic reaches the canary yet.
        first_step(b, target, threshold);
        return;
    }
    // The sequential test between the ticks: a crossed bound rolls back now, as a failed
    // check (alerts on failedChecks see it); enough evidence for the canary lets the
    // next passed round skip the remaining steps.
    let promote_early = match super::sequential::evaluate(b) {
        Some(Decision::Rollback(reason)) => {
            b.status.failed_checks += 1;
            b.status.last_analysis_time = Some(Time(input.now));
            b.rollback(&Finding::gate("sequential-test", reason));
            return;
        }
        Some(Decision::Promote(reason)) => Some(reason),
        _ => None,
    };
    if waiting_promotion && promotion_open(canary, input) {
        // The analysis passed at maxWeight; the checks kept running while waiting.
        b.event(
            Severity::Info,
            reasons::APPROVED,
            format!("Promotion of {} approved", target.revision),
        );
        if blue_green {
            switch_and_promote(b, target);
        } else {
            promote_now(b, target);
        }
        return;
    }
    let step_tests = !iterated
        && canary
            .spec
            .analysis
            .has_conformance(ConformanceWhen::EachStep);
    if step_tests && let Conformance::Failed(why) = &input.observed.conformance {
        // A conformance test of this step failed: roll back at once, not at the tick.
        b.rollback(why);
        return;
    }
    let Some(verdict) = &input.verdict else {
        let remaining = canary
            .spec
            .analysis
            .interval()
            .saturating_sub(since(&status.last_analysis_time, input.now));
        b.requeue = if waiting_promotion {
            POLL.min(remaining.max(Duration::from_millis(200)))
        } else {
            remaining.max(Duration::from_millis(200))
        };
        return;
    };
    b.status.last_analysis_time = Some(Time(input.now));
    match verdict {
        Verdict::Rollback(why) => b.rollback(why),
        Verdict::Fail(why) => {
            if !failed_check(b, why, threshold, "Halt advancement", "check failed") {
                b.requeue = if waiting_promotion {
                    POLL
                } else {
                    b.interval()
                };
            }
        }
        Verdict::Hold(why) => {
            b.status.marginal_checks += 1;
            b.finding(
                Severity::Info,
                reasons::HOLD,
                format!("Holding at weight {weight}: {why}"),
                why,
            );
            b.status.message = Some(format!("holding at weight {weight}: {why}"));
            b.requeue = if waiting_promotion {
                POLL
            } else {
                b.interval()
            };
        }
        Verdict::Pass if waiting_promotion => {
            if let Some(Err(why)) = &input.webhooks.confirm_promotion {
                b.status.message = Some(format!(
                    "waiting for the confirm-promotion webhooks to promote {}: {why}; the checks keep running",
                    target.revision
                ));
            }
            b.requeue = POLL;
        }
        Verdict::Pass if iterated => {
            b.status.iterations += 1;
            let (done, of) = (b.status.iterations, iterations(canary));
            if done < of
                && let Some(reason) = &promote_early
            {
                b.event(
                    Severity::Info,
                    reasons::PROMOTE_EARLY,
                    format!(
                        "Promoting {} early, after iteration {done}/{of}: {reason}",
                        target.revision
                    ),
                );
            }
            if done < of && promote_early.is_none() {
                b.status.message = Some(if ab_test {
                    format!(
                        "A/B testing {} on the matching requests: iteration {done}/{of}",
                        target.revision
                    )
                } else {
                    format!(
                        "analysing {} against the canary Service: iteration {done}/{of}",
                        target.revision
                    )
                });
                b.requeue = b.interval();
            } else if let Err(why) =
                webhook_gate(canary, &input.webhooks, WebhookType::ConfirmPromotion)
            {
                wait_for_promotion_hooks(b, target, why);
            } else if canary.spec.approvals().promotion && !input.gates.promotion_approved {
                b.event(Severity::Info, reasons::WAITING_APPROVAL, format!("Analysis of {} passed; promotion waits for approval (annotate serin.dev/approve-promotion={})", target.revision, target.revision));
                b.phase(
                    CanaryPhase::WaitingPromotion,
                    format!(
                        "waiting for approval to promote {}; the checks keep running",
                        target.revision
                    ),
                );
                b.requeue = POLL;
            } else if ab_test {
                // The matching requests stay on the canary while it is copied to the
                // primary, as in Flagger; then everyone is routed to the primary.
                b.event(
                    Severity::Info,
                    reasons::PROMOTING,
                    format!(
                        "A/B test of {} passed after {done} iterations, copying it to the primary",
                        target.revision
                    ),
                );
                promote_now(b, target);
            } else {
                switch_and_promote(b, target);
            }
        }
        Verdict::Pass if step_tests && input.observed.conformance != Conformance::Passed => {
            // The checks passed, but the conformance tests of this weight still run: the
            // next step (or the promotion) waits for them until the next tick.
            b.status.message = Some(format!(
                "weight {weight}: the checks passed; waiting for the conformance tests of this step"
            ));
            b.requeue = b.interval();
        }
        Verdict::Pass => {
            let promotion_hooks =
                webhook_gate(canary, &input.webhooks, WebhookType::ConfirmPromotion);
            let max_weight = canary.spec.analysis.max_weight();
            if weight < max_weight
                && let Some(reason) = &promote_early
            {
                b.event(
                    Severity::Info,
                    reasons::PROMOTE_EARLY,
                    format!(
                        "Promoting {} early at weight {weight} of {max_weight}: {reason}",
                        target.revision
                    ),
                );
            }
            if weight >= max_weight || promote_early.is_some() {
                if let Err(why) = promotion_hooks {
                    wait_for_promotion_hooks(b, target, why);
                } else if canary.spec.approvals().promotion && !input.gates.promotion_approved {
                    b.event(Severity::Info, reasons::WAITING_APPROVAL, format!("Analysis of {} passed; promotion waits for approval (annotate serin.dev/approve-promotion={})", target.revision, target.revision));
                    b.phase(
                        CanaryPhase::WaitingPromotion,
                        format!(
                            "waiting for approval to promote {} (serin approve {} --gate promotion); the checks keep running",
                            target.revision,
                            canary.metadata.name.as_deref().unwrap_or_default()
                        ),
                    );
                    b.requeue = POLL;
                } else {
                    b.event(
                        Severity::Info,
                        reasons::PROMOTING,
                        format!(
                            "Analysis of {} passed at weight {weight}, copying it to the primary",
                            target.revision
                        ),
                    );
                    promote_now(b, target);
                }
            } else if canary.spec.approvals().traffic_increase
                && !input.gates.traffic_increase_approved(weight)
            {
                let waiting = format!(
                    "weight {weight}: waiting for approval to increase traffic (serin approve {} --gate traffic, or annotate serin.dev/approve-traffic-increase={}@{weight})",
                    canary.metadata.name.as_deref().unwrap_or_default(),
                    target.revision
                );
                // Said once per gate: the wait is re-checked every interval.
                if status.message.as_deref() != Some(waiting.as_str()) {
                    b.event(
                        Severity::Info,
                        reasons::WAITING_APPROVAL,
                        format!(
                            "Analysis of {} passed at weight {weight}; the next traffic increase waits for approval (annotate serin.dev/approve-traffic-increase={}@{weight})",
                            target.revision, target.revision
                        ),
                    );
                }
                b.status.message = Some(waiting);
                b.requeue = POLL;
            } else if let Err(why) =
                webhook_gate(canary, &input.webhooks, WebhookType::ConfirmTrafficIncrease)
            {
                let closer = why.clone();
                let waiting = format!(
                    "weight {weight}: waiting for the confirm-traffic-increase webhooks: {}",
                    closed_because(why, "confirm-traffic-increase")
                );
                // Said once per gate: the webhooks are asked again every interval.
                if status.message.as_deref() != Some(waiting.as_str()) {
                    b.event(
                        Severity::Info,
                        reasons::WAITING_APPROVAL,
                        format!("Analysis of {} passed; {waiting}", target.revision),
                    );
                    b.mute_if_asked(closer.as_ref());
                }
                b.status.message = Some(waiting);
                b.requeue = b.interval();
            } else {
                step_to(b, next_weight(canary, weight), target);
            }
        }
    }
}

/// The first step of traffic, Flagger's way: the `pre-rollout` webhooks run before any
/// traffic reaches the canary, and a failure counts as a failed check (`threshold`
/// applies; they are asked again one interval later); then the
/// `confirm-traffic-increase` webhooks must let the step through.
/// The analysis passed, but a `confirm-promotion` webhook has not (or not yet) said yes:
/// the promotion waits in WaitingPromotion, where the checks keep running.
fn wait_for_promotion_hooks(b: &mut Builder<'_>, target: &Target, why: Option<Finding>) {
    let closer = why.clone();
    let why = closed_because(why, "confirm-promotion");
    b.event(
        Severity::Info,
        reasons::WAITING_APPROVAL,
        format!(
            "Analysis of {} passed; promotion waits for its confirm-promotion webhooks: {why}",
            target.revision
        ),
    );
    b.mute_if_asked(closer.as_ref());
    b.phase(
        CanaryPhase::WaitingPromotion,
        format!(
            "waiting for the confirm-promotion webhooks to promote {}: {why}; the checks keep running",
            target.revision
        ),
    );
    b.requeue = POLL;
}

/// Blue/green and A/B testing, before the iterations start: the conformance tests that
/// run before traffic, then the `pre-rollout` webhooks (a failure is a failed check, as
/// in Flagger). Returns whether the iterations may start now.
fn iterations_may_start(b: &mut Builder<'_>, target: &Target, threshold: u32) -> bool {
    let input = b.input;
    let canary = input.canary;
    if !conformance_passed_before_traffic(b, target) {
        return false;
    }
    match webhook_gate(canary, &input.webhooks, WebhookType::PreRollout) {
        Ok(()) => true,
        Err(None) => {
            // Not called this reconcile: the retry after a failure waits an interval.
            let waited = since(&b.status.analysis_start_time, input.now);
            b.requeue = canary
                .spec
                .analysis
                .interval()
                .saturating_sub(waited)
                .max(Duration::from_millis(200));
            false
        }
        Err(Some(why)) => {
            // `analysis_start_time` paces the retry; the start of the iterations sets it
            // again.
            b.status.analysis_start_time = Some(Time(input.now));
            pre_rollout_failed(b, &why, threshold);
            false
        }
    }
}

/// The conformance tests that run before any traffic, if the Canary has some: a failure
/// rolls back at once, a test still running holds. Returns whether traffic may start.
fn conformance_passed_before_traffic(b: &mut Builder<'_>, target: &Target) -> bool {
    let input = b.input;
    if !input
        .canary
        .spec
        .analysis
        .has_conformance(ConformanceWhen::BeforeTraffic)
    {
        return true;
    }
    match &input.observed.conformance {
        Conformance::Passed => true,
        Conformance::Failed(why) => {
            b.rollback(why);
            false
        }
        Conformance::Running | Conformance::NotRead => {
            b.status.message = Some(format!(
                "running the conformance tests of {} before any traffic",
                target.revision
            ));
            b.requeue = POLL;
            false
        }
    }
}

/// A `pre-rollout` webhook failed: a failed check, and a rollback at `threshold`.
fn pre_rollout_failed(b: &mut Builder<'_>, why: &Finding, threshold: u32) {
    if !failed_check(
        b,
        why,
        threshold,
        "Pre-rollout check failed",
        "pre-rollout check failed",
    ) {
        b.requeue = b.interval();
    }
}

/// Counts one failed check: a `CheckFailed` event (`event: why (failed checks n/t)`),
/// and a rollback once `threshold` is reached, else `status: (n/t) why` in the status
/// message. Returns whether it rolled back.
fn failed_check(
    b: &mut Builder<'_>,
    why: &Finding,
    threshold: u32,
    event: &str,
    status: &str,
) -> bool {
    b.status.failed_checks += 1;
    let failed = u32::try_from(b.status.failed_checks).unwrap_or(0);
    b.finding(
        Severity::Warn,
        reasons::CHECK_FAILED,
        format!("{event}: {why} (failed checks {failed}/{threshold})"),
        why,
    );
    if failed >= threshold {
        b.rollback(&Finding {
            message: format!("failed checks threshold reached {failed}/{threshold}: {why}"),
            ..why.clone()
        });
        true
    } else {
        b.status.message = Some(format!("{status} ({failed}/{threshold}): {why}"));
        false
    }
}

pub(super) fn first_step(b: &mut Builder<'_>, target: &Target, threshold: u32) {
    let input = b.input;
    let canary = input.canary;
    if !conformance_passed_before_traffic(b, target) {
        return;
    }
    let pre_rollout = webhook_gate(canary, &input.webhooks, WebhookType::PreRollout);
    let increase = webhook_gate(canary, &input.webhooks, WebhookType::ConfirmTrafficIncrease);
    let not_yet = || {
        canary
            .spec
            .analysis
            .interval()
            .saturating_sub(since(&b.status.last_analysis_time, input.now))
            .max(Duration::from_millis(200))
    };
    match (pre_rollout, increase) {
        (Err(Some(why)), _) => {
            b.status.last_analysis_time = Some(Time(input.now));
            pre_rollout_failed(b, &why, threshold);
        }
        (Err(None), _) | (Ok(()), Err(None)) => {
            b.requeue = if b.status.last_analysis_time.is_none() {
                POLL
            } else {
                not_yet()
            };
        }
        (Ok(()), Err(Some(why))) => {
            b.status.last_analysis_time = Some(Time(input.now));
            b.status.message = Some(format!(
                "weight 0: waiting for the confirm-traffic-increase webhooks: {why}"
            ));
            b.requeue = b.interval();
        }
        (Ok(()), Ok(())) => step_to(b, next_weight(canary, 0), target),
    }
}

pub(super) fn step_to(b: &mut Builder<'_>, weight: u32, target: &Target) {
    if b.status.canary_weight == 0 {
        // The analysis proper starts with the first traffic: metric windows, the
        // sequential test's counts and the compared samples are measured from here,
        // not from the detection (the canary may take a while to become ready).
        b.status.analysis_start_time = Some(Time(b.input.now));
        super::sequential::record_start(b);
    }
    b.status.canary_weight = i32::try_from(weight).unwrap_or(100);
    b.status.last_analysis_time = Some(Time(b.input.now));
    b.event(
        Severity::Info,
        reasons::ADVANCED,
        format!("Advance {} canary weight {weight}", target.revision),
    );
    b.status.message = Some(format!("analysing {} at weight {weight}", target.revision));
    b.requeue = b.interval();
}
