//! The sequential test in the plan, evaluated at every reconcile of an analysis (every
//! `analysis.sequential.evaluationInterval` between the ticks): the counters read at
//! the first traffic are recorded in `status.sequentialTest.start`, every later reading
//! is tested against them, the evidence is written to `status.sequentialTest`, and a
//! crossed bound rolls back at once, counted as a failed check.

use super::*;
use crate::analysis::counts::{self, Decision};
use crate::api::SequentialTestStatus;

fn enabled(b: &Builder<'_>) -> bool {
    b.input.canary.spec.analysis.sequential().enabled
}

/// Records the counters this reconcile read as the start of the analysis's counts (at
/// its first traffic). Without a reading, the first evaluation records its own.
pub(super) fn record_start(b: &mut Builder<'_>) {
    if !enabled(b) {
        return;
    }
    let start = match &b.input.counters {
        Some(Ok(readings)) => Some(*readings),
        _ => None,
    };
    b.status.sequential_test = Some(SequentialTestStatus {
        start,
        ..SequentialTestStatus::default()
    });
}

/// Evaluates the test on this reconcile's counters and records the evidence (the status
/// changes only when the evidence does). `None` when there is nothing to evaluate: the
/// test is off, the counters were not read, or this reading becomes the start. A reading
/// that failed is the verdict's to judge at the tick (never a pass).
pub(super) fn evaluate(b: &mut Builder<'_>) -> Option<Decision> {
    if !enabled(b) {
        return None;
    }
    let Some(Ok(now)) = &b.input.counters else {
        return None;
    };
    let seq = b.input.canary.spec.analysis.sequential();
    let time = Time(b.input.now);
    let state = b
        .status
        .sequential_test
        .get_or_insert_with(Default::default);
    let Some(start) = state.start else {
        state.start = Some(*now);
        return None;
    };
    let evaluation = counts::evaluate(&start, now, &seq);
    tracing::info!(
        evidence = %evaluation.evidence,
        decision = ?evaluation.decision,
        "sequential test"
    );
    if state.evidence.as_deref() != Some(evaluation.evidence.as_str()) {
        state.evidence = Some(evaluation.evidence);
        state.time = Some(time);
    }
    Some(evaluation.decision)
}

/// While the analysis runs with the test on, look again at the evaluation interval at
/// the latest (the steps still wait for their interval).
pub(super) fn requeue(b: &mut Builder<'_>) {
    let status = &b.status;
    let running = matches!(
        status.phase,
        CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    ) && (status.canary_weight > 0
        || (is_blue_green(b.input.canary) && status.last_analysis_time.is_some()));
    if enabled(b) && running {
        let every = b
            .input
            .canary
            .spec
            .analysis
            .sequential()
            .evaluation_interval();
        b.requeue = b.requeue.min(every);
    }
}
