//! What a reconcile reports in serin's own metrics: the Flagger-compatible series of
//! the Canary's status, and how late its analysis ticks run.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::Context;
use crate::api::Canary;
use crate::telemetry::{AnalysisStatus, DeploymentStrategy, Outcome};

/// Updates the Flagger-compatible series after a reconcile.
pub(super) fn record(ctx: &Context, canary: &Canary, status: &crate::api::CanaryStatus) {
    let (name, ns) = (
        canary.spec.target_ref.name.as_str(),
        canary.namespace().unwrap_or_default(),
    );
    ctx.metrics.set_phase(name, &ns, status.phase);
    let weight = i64::from(status.canary_weight);
    ctx.metrics.set_weight(name, &ns, 100 - weight, weight);
    if let Some(late) = tick_lateness(canary, status) {
        ctx.metrics.observe_tick_lateness(late.as_secs_f64());
    }
    let before = canary.status.as_ref().map(|s| s.phase);
    if before != Some(status.phase) {
        let analysis = if canary.spec.skip_analysis {
            AnalysisStatus::Skipped
        } else {
            AnalysisStatus::Completed
        };
        let outcome = match status.phase {
            crate::api::CanaryPhase::Succeeded => Some(Outcome::Succeeded),
            crate::api::CanaryPhase::Failed => Some(Outcome::Failed),
            _ => None,
        };
        if let Some(outcome) = outcome {
            ctx.metrics
                .inc_outcome(name, &ns, DeploymentStrategy::Canary, analysis, outcome);
            if let Some(start) = &status.analysis_start_time {
                let seconds = jiff::Timestamp::now().duration_since(start.0).as_secs_f64();
                ctx.metrics.observe_duration(name, &ns, seconds);
            }
        }
    }
}

/// How late the analysis tick recorded in `status` ran: its time minus the previous
/// tick's plus the interval. `None` when `status` records no new tick of the same
/// analysis, or a decision taken between ticks (the sequential test), which is not due
/// at an interval.
fn tick_lateness(canary: &Canary, status: &crate::api::CanaryStatus) -> Option<Duration> {
    let before = canary.status.as_ref()?;
    if !matches!(
        before.phase,
        crate::api::CanaryPhase::Progressing | crate::api::CanaryPhase::WaitingPromotion
    ) {
        return None;
    }
    let late = past_due(canary, status.last_analysis_time.as_ref()?.0)?;
    (late >= 0.0).then(|| Duration::from_secs_f64(late))
}

/// Seconds by which `at` is past the Canary's next tick (its last tick plus the
/// interval); negative before it.
pub(super) fn past_due(canary: &Canary, at: Timestamp) -> Option<f64> {
    let last = canary.status.as_ref()?.last_analysis_time.as_ref()?.0;
    Some(at.duration_since(last).as_secs_f64() - canary.spec.analysis.interval().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CanaryPhase;

    /// A Canary (interval 1 m, Flagger's default) in `phase` whose last tick was at
    /// second 0, and a status that records one at `seconds`.
    fn ticks(phase: CanaryPhase, seconds: i64) -> (Canary, crate::api::CanaryStatus) {
        let at = |s: i64| {
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::from_second(1_800_000_000 + s).expect("time"),
            ))
        };
        let mut canary = Canary::test();
        let before = crate::api::CanaryStatus {
            phase,
            last_analysis_time: at(0),
            ..Default::default()
        };
        let after = crate::api::CanaryStatus {
            last_analysis_time: at(seconds),
            ..before.clone()
        };
        canary.status = Some(before);
        (canary, after)
    }

    #[test]
    fn a_tick_is_as_late_as_it_ran_after_the_last_tick_plus_the_interval() {
        let (canary, status) = ticks(CanaryPhase::Progressing, 63);
        assert_eq!(
            tick_lateness(&canary, &status),
            Some(Duration::from_secs(3))
        );
        let (canary, status) = ticks(CanaryPhase::WaitingPromotion, 60);
        assert_eq!(tick_lateness(&canary, &status), Some(Duration::ZERO));
    }

    #[test]
    fn a_decision_between_ticks_or_outside_an_analysis_is_no_tick() {
        let (canary, status) = ticks(CanaryPhase::Progressing, 20);
        assert_eq!(tick_lateness(&canary, &status), None);
        let (canary, status) = ticks(CanaryPhase::Progressing, 0);
        assert_eq!(tick_lateness(&canary, &status), None);
        let (canary, status) = ticks(CanaryPhase::Succeeded, 90);
        assert_eq!(tick_lateness(&canary, &status), None);
    }
}
