//! The sequential test in the plan: counted from the counters at the first traffic,
//! evaluated between the ticks, a rollback counted as a failed check, the evidence in
//! status, and early promotion through the promotion gates.

use std::time::Duration;

use crate::api::{
    CanaryPhase, CounterReadings, Sequential, SequentialTestStatus, WorkloadCounters,
};
use crate::rollout::conditions::reasons;
use crate::rollout::fixtures::{Clock, analysing_rev_b, canary, rev_b_ready};
use crate::rollout::plan::{self, Gates, Input, Plan, Verdict};

fn sequential(promote_early: bool) -> Sequential {
    Sequential {
        enabled: true,
        promote_early,
        evaluation_interval: Some("2s".into()),
        ..Sequential::default()
    }
}

fn readings(canary: (u64, u64), primary: (u64, u64)) -> CounterReadings {
    let w = |(requests, errors)| WorkloadCounters {
        requests,
        errors,
        ..WorkloadCounters::default()
    };
    CounterReadings {
        canary: w(canary),
        primary: w(primary),
    }
}

fn plan_with_counters(
    canary: &crate::api::Canary,
    verdict: Option<Verdict>,
    counters: Option<Result<CounterReadings, String>>,
    now: jiff::Timestamp,
    gates: Gates,
) -> Plan {
    plan::plan(&Input {
        canary,
        observed: &rev_b_ready(),
        gates,
        verdict,
        webhooks: plan::Webhooks::default(),
        counters,
        now,
    })
}

/// Canary at `weight` with the test on, counting from (canary 0, primary 10 000).
fn analysing(
    weight: i32,
    since_step: u64,
    clock: &Clock,
    promote_early: bool,
) -> crate::api::Canary {
    let mut c = canary().interval_secs(30).max_weight(50);
    c.spec.analysis.sequential = Some(sequential(promote_early));
    let mut c = analysing_rev_b(c, clock, weight, since_step);
    c.status.as_mut().unwrap().sequential_test = Some(SequentialTestStatus {
        start: Some(readings((0, 0), (10_000, 10))),
        ..SequentialTestStatus::default()
    });
    c
}

#[test]
fn the_first_traffic_step_records_the_counters_it_counts_from() {
    let clock = Clock::start();
    let mut c = canary().interval_secs(30);
    c.spec.analysis.sequential = Some(sequential(false));
    let c = analysing_rev_b(c, &clock, 0, 30);
    let start = readings((0, 0), (5000, 5));
    let plan = plan_with_counters(&c, None, Some(Ok(start)), clock.now(), Gates::default());
    assert_eq!(plan.status.canary_weight, 10);
    assert_eq!(
        plan.status.sequential_test.as_ref().and_then(|s| s.start),
        Some(start)
    );
}

#[test]
fn a_crossed_bound_between_ticks_rolls_back_at_once_as_a_failed_check() {
    let clock = Clock::start();
    // Three seconds after the step: the tick is 27 s away.
    let c = analysing(10, 3, &clock, false);
    let now = readings((1000, 100), (19_000, 19));
    let plan = plan_with_counters(&c, None, Some(Ok(now)), clock.now(), Gates::default());
    let s = &plan.status;
    assert_eq!(s.phase, CanaryPhase::Failed);
    assert_eq!(s.failed_checks, 1, "alerts on failedChecks see it");
    let message = s.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("sequential test (errors): canary fails more often than primary: canary 100 of 1000 requests (10.00%)"),
        "{message}"
    );
    let e = plan
        .events
        .iter()
        .find(|e| e.reason == reasons::ROLLED_BACK)
        .expect("RolledBack event");
    assert!(e.message.contains("sequential test"), "{e:?}");
    assert_eq!(e.metric.as_deref(), Some("sequential-test"));
    let evidence = s.sequential_test.as_ref().and_then(|t| t.evidence.clone());
    assert!(
        evidence.is_some_and(|e| e.starts_with("errors: canary 100 of 1000")),
        "{s:?}"
    );
}

#[test]
fn every_evaluation_records_the_evidence_and_looks_again_at_the_evaluation_interval() {
    let mut clock = Clock::start();
    let c = analysing(10, 3, &clock, false);
    let now = readings((300, 1), (12_700, 13));
    let plan = plan_with_counters(&c, None, Some(Ok(now)), clock.now(), Gates::default());
    assert_eq!(plan.status.phase, CanaryPhase::Progressing);
    assert_eq!(
        plan.status.canary_weight, 10,
        "steps wait for their interval"
    );
    assert_eq!(plan.requeue, Duration::from_secs(2));
    let test = plan.status.sequential_test.clone().unwrap();
    assert!(
        test.evidence
            .as_deref()
            .is_some_and(|e| e.starts_with("errors: canary 1 of 300 (0.33%), primary 3 of 2700")),
        "{test:?}"
    );
    assert_eq!(
        test.time,
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            clock.now()
        ))
    );
    // The same evidence later changes nothing: no status write.
    let mut again = c.clone();
    again.status = Some(plan.status.clone());
    clock.advance_secs(2);
    let plan = plan_with_counters(&again, None, Some(Ok(now)), clock.now(), Gates::default());
    assert_eq!(plan.status.sequential_test, Some(test));
}

#[test]
fn an_unread_counter_is_never_a_pass_at_the_tick() {
    let clock = Clock::start();
    let c = analysing(10, 3, &clock, false);
    let plan = plan_with_counters(
        &c,
        None,
        Some(Err("Prometheus unreachable".into())),
        clock.now(),
        Gates::default(),
    );
    assert_eq!(plan.status.phase, CanaryPhase::Progressing);
    assert_eq!(plan.status.failed_checks, 0, "between ticks it waits");
}

#[test]
fn promote_early_skips_the_remaining_steps_at_a_passed_round() {
    let clock = Clock::start();
    let c = analysing(20, 30, &clock, true);
    let healthy = readings((20_000, 100), (50_000, 210));
    let plan = plan_with_counters(
        &c,
        Some(Verdict::Pass),
        Some(Ok(healthy)),
        clock.now(),
        Gates::default(),
    );
    assert_eq!(
        plan.status.phase,
        CanaryPhase::Promoting,
        "{:?}",
        plan.status.message
    );
    let e = plan
        .events
        .iter()
        .find(|e| e.reason == reasons::PROMOTE_EARLY)
        .expect("PromoteEarly event");
    assert!(e.message.contains("at weight 20 of 50"), "{e:?}");
    // Without promoteEarly the same evidence only steps.
    let c = analysing(20, 30, &clock, false);
    let plan = plan_with_counters(
        &c,
        Some(Verdict::Pass),
        Some(Ok(healthy)),
        clock.now(),
        Gates::default(),
    );
    assert_eq!(plan.status.canary_weight, 30);
}

#[test]
fn promote_early_still_waits_for_the_promotion_approval() {
    let clock = Clock::start();
    let c = analysing(20, 30, &clock, true).requires_promotion_approval();
    let healthy = readings((20_000, 100), (50_000, 210));
    let plan = plan_with_counters(
        &c,
        Some(Verdict::Pass),
        Some(Ok(healthy)),
        clock.now(),
        Gates::default(),
    );
    assert_eq!(plan.status.phase, CanaryPhase::WaitingPromotion);
    assert_eq!(plan.status.canary_weight, 20);
}

#[test]
fn the_first_round_runs_one_whole_interval_after_the_first_traffic() {
    let mut clock = Clock::start();
    let mut c = canary().interval_secs(10);
    c.spec.analysis.sequential = Some(sequential(false));
    // Detected (and last looked at) 9 s ago; the canary became ready only now.
    let c = analysing_rev_b(c, &clock, 0, 9);
    let plan = plan_with_counters(&c, None, None, clock.now(), Gates::default());
    assert_eq!(plan.status.canary_weight, 10, "the first step");
    let mut stepped = c.clone();
    stepped.status = Some(plan.status.clone());
    let first_traffic = clock.now();
    assert_eq!(
        plan.status.analysis_start_time.as_ref().map(|t| t.0),
        Some(first_traffic)
    );
    clock.advance_secs(9);
    assert!(
        !plan::analysis_due(&stepped, clock.now()),
        "not 9 s after the first traffic"
    );
    clock.advance_secs(1);
    assert!(plan::analysis_due(&stepped, clock.now()));
}

#[test]
fn the_counters_are_read_at_every_reconcile_of_an_analysis_with_the_test_on() {
    let clock = Clock::start();
    let mut c = canary().interval_secs(30);
    c.spec.analysis.sequential = Some(sequential(false));
    for weight in [0, 10] {
        let at = analysing_rev_b(c.clone(), &clock, weight, 3);
        assert!(plan::needs(&at, &rev_b_ready(), clock.now()).sequential);
    }
    let off = analysing_rev_b(canary().interval_secs(30), &clock, 10, 3);
    assert!(!plan::needs(&off, &rev_b_ready(), clock.now()).sequential);
    let settled = c.with_status(|s| s.phase(CanaryPhase::Succeeded));
    assert!(!plan::needs(&settled, &rev_b_ready(), clock.now()).sequential);
}
