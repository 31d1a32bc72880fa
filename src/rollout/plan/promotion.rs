//! Promotion: the analysed revision is copied to the primary, traffic returns to it
//! (step by step with `stepWeightPromotion`, or by the blue/green switch), and a newer
//! revision that arrives meanwhile waits for that promotion to finish or restarts.

use super::*;

/// The iterations of a blue/green analysis.
pub(super) fn iterations(canary: &Canary) -> i32 {
    canary.spec.analysis.iterations.unwrap_or(1).max(1)
}

/// Blue/green: the checks passed, so all traffic switches to the canary's pods, and the
/// primary is updated behind it while it serves nobody (Flagger rolls the primary's
/// pods while they serve, issue #1096); once the promoted primary is ready, traffic
/// switches back to it.
pub(super) fn switch_and_promote(b: &mut Builder<'_>, target: &Target) {
    b.status.canary_weight = 100;
    b.event(
        Severity::Info,
        reasons::PROMOTING,
        format!(
            "Analysis of {} passed after {} iterations: all traffic switches to it while the primary is updated",
            target.revision, b.status.iterations
        ),
    );
    promote_now(b, target);
}

pub(super) fn promote_now(b: &mut Builder<'_>, target: &Target) {
    b.primary = PrimaryAction::Promote;
    b.phase(
        CanaryPhase::Promoting,
        format!("copying {} to the primary", target.revision),
    );
    b.requeue = POLL;
}

pub(super) fn promote(b: &mut Builder<'_>, target: &Target) {
    let input = b.input;
    let canary = input.canary;
    let applied = b.status.last_applied_spec.clone().unwrap_or_default();
    let primary = input.observed.primary.as_ref();
    let primary_runs_applied = primary.and_then(|p| p.revision.as_deref()) == Some(&applied);
    if target.revision != applied {
        if !primary_runs_applied {
            // Never copy a revision that was not analysed: the copy had not started.
            b.restart(&target.revision, "promotion");
            return;
        }
        // The primary already runs the analysed revision: finish its promotion (the
        // newer revision is analysed next). The canary's pods now run the newer,
        // unanalysed revision, so all traffic goes to the primary at once.
        b.status.canary_weight = 0;
        match primary.map(|p| &p.ready) {
            Some(Readiness::Ready) => b.phase(
                CanaryPhase::Finalising,
                format!("routing all traffic to the primary running {applied}"),
            ),
            Some(Readiness::NotReady(why)) => {
                b.status.message = Some(format!("waiting for the promoted primary: {why}"));
            }
            None => {}
        }
        b.requeue = POLL;
        return;
    }
    b.primary = PrimaryAction::Promote;
    let promoted = primary.filter(|_| primary_runs_applied);
    match promoted.map(|p| &p.ready) {
        Some(Readiness::Ready) => {
            let weight = u32::try_from(b.status.canary_weight).unwrap_or(0);
            let step = canary.spec.analysis.step_weight_promotion();
            let due =
                since(&b.status.last_analysis_time, input.now) >= canary.spec.analysis.interval();
            if weight > step && due {
                // Move traffic back to the (now promoted) primary step by step.
                b.status.canary_weight = i32::try_from(weight - step).unwrap_or(0);
                b.status.last_analysis_time = Some(Time(input.now));
                b.event(
                    Severity::Info,
                    reasons::ADVANCED,
                    format!("Promotion: primary weight {}", 100 - (weight - step)),
                );
                b.requeue = canary.spec.analysis.interval();
            } else if weight > step {
                b.requeue = canary
                    .spec
                    .analysis
                    .interval()
                    .saturating_sub(since(&b.status.last_analysis_time, input.now))
                    .max(Duration::from_millis(200));
            } else {
                b.status.canary_weight = 0;
                b.phase(
                    CanaryPhase::Finalising,
                    format!(
                        "routing all traffic to the primary running {}",
                        target.revision
                    ),
                );
                b.requeue = POLL;
            }
        }
        Some(Readiness::NotReady(why)) => {
            b.status.message = Some(format!("waiting for the promoted primary: {why}"));
            b.requeue = READINESS_POLL;
        }
        None => {
            b.status.message = Some(format!("copying {} to the primary", target.revision));
            b.requeue = POLL;
        }
    }
}
