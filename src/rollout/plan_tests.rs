//! Table-driven tests of the rollout state machine, one phase transition at a time, with
//! plain values and a fake clock; then property-style loops over seeded random rollouts
//! for the invariants of DESIGN.md.

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Canary, CanaryPhase, CanaryStatus};
use crate::rollout::conditions::{self, reasons};
use crate::rollout::fixtures::{
    Clock, Rng, apply, canary, not_ready, observed, plan_at, plan_with, ready,
};
use crate::rollout::plan::{
    Event, Gates, Observed, Plan, Primary, PrimaryAction, Readiness, TargetScale, Traffic, Verdict,
    analysis_due, next_weight,
};

use CanaryPhase::*;

// ---------------------------------------------------------------------------------------
// Helpers for assertions

/// The status of condition `type_`: "True", "False", or "" when absent.
fn condition<'a>(status: &'a CanaryStatus, type_: &str) -> &'a str {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or("", |c| c.status.as_str())
}

fn event<'a>(plan: &'a Plan, reason: &str) -> Option<&'a Event> {
    plan.events.iter().find(|e| e.reason == reason)
}

fn message(status: &CanaryStatus) -> &str {
    status.message.as_deref().unwrap_or("")
}

fn at(t: Timestamp) -> Option<Time> {
    Some(Time(t))
}

/// A canary analysing `rev-b` (the primary serves `rev-a`) at `weight`, last stepped
/// `since_step` seconds before the clock's time.
fn analysing(canary: Canary, clock: &Clock, weight: i32, since_step: u64) -> Canary {
    let started = clock.ago_secs(since_step + 1);
    let stepped = clock.ago_secs(since_step);
    canary.with_status(|s| {
        s.phase(Progressing)
            .promoted("rev-a")
            .applied("rev-b")
            .weight(weight)
            .analysis_started_at(started)
            .last_analysed_at(stepped)
    })
}

fn target_b_ready() -> Observed {
    crate::rollout::fixtures::rev_b_ready()
}

/// Runs analysis rounds, one per interval, giving `verdict` whenever the checks are due,
/// until the canary leaves Progressing (or 50 rounds). Returns the weight after each round
/// and the last plan.
fn run_analysis(mut canary: Canary, clock: &mut Clock, verdict: Verdict) -> (Vec<i32>, Plan) {
    let world = target_b_ready();
    let interval = canary.spec.analysis.interval().as_secs();
    let mut weights = Vec::new();
    for _ in 0..50 {
        let due = analysis_due(&canary, clock.now());
        let verdict = due.then(|| verdict.clone());
        let plan = plan_with(&canary, &world, Gates::default(), verdict, clock.now());
        apply(&mut canary, &plan);
        weights.push(plan.status.canary_weight);
        if plan.status.phase != Progressing {
            return (weights, plan);
        }
        clock.advance_secs(interval);
    }
    panic!("still progressing after 50 rounds: weights {weights:?}");
}

// ---------------------------------------------------------------------------------------
// Initialization

#[test]
fn a_new_canary_bootstraps_the_primary() {
    let clock = Clock::start();
    let plan = plan_at(&canary(), &observed().target("rev-a", ready()), clock.now());
    assert_eq!(plan.primary, PrimaryAction::Bootstrap);
    assert_eq!(plan.target, TargetScale::Keep);
    assert_eq!(plan.status.phase, Initializing);
    assert_eq!(plan.status.canary_weight, 0);
    assert_eq!(message(&plan.status), "creating the primary");
    assert_eq!(condition(&plan.status, conditions::READY), "False");
}

#[test]
fn initialization_waits_while_the_primary_is_not_ready_and_says_why() {
    let clock = Clock::start();
    let world = observed()
        .target("rev-a", ready())
        .primary("rev-a", not_ready("0/2 replicas available"));
    let plan = plan_at(&canary(), &world, clock.now());
    assert_eq!(plan.status.phase, Initializing);
    assert_eq!(plan.primary, PrimaryAction::Keep);
    assert_eq!(plan.target, TargetScale::Keep, "the target keeps serving");
    assert!(
        message(&plan.status).contains("0/2 replicas available"),
        "{:?}",
        plan.status.message
    );
    assert_eq!(condition(&plan.status, conditions::READY), "False");
    assert!(plan.events.is_empty());
}

#[test]
fn a_ready_primary_completes_initialization_and_scales_the_target_down() {
    let clock = Clock::start();
    let world = observed()
        .target("rev-a", ready())
        .primary("rev-a", ready());
    let plan = plan_at(&canary(), &world, clock.now());
    assert_eq!(plan.status.phase, Initialized);
    assert_eq!(plan.target, TargetScale::Down);
    assert_eq!(plan.primary, PrimaryAction::Keep);
    assert_eq!(plan.status.canary_weight, 0);
    assert_eq!(plan.status.last_applied_spec.as_deref(), Some("rev-a"));
    assert_eq!(plan.status.last_promoted_spec.as_deref(), Some("rev-a"));
    assert_eq!(condition(&plan.status, conditions::READY), "True");
    assert_eq!(condition(&plan.status, conditions::PROMOTED), "True");
    assert_eq!(plan.status.observed_generation, Some(1));
    assert!(event(&plan, reasons::INITIALIZED).is_some());
}

// ---------------------------------------------------------------------------------------
// A new revision

#[test]
fn a_new_revision_after_a_settled_phase_starts_progressing_at_weight_zero() {
    let clock = Clock::start();
    for settled in [Initialized, Succeeded, Failed] {
        let canary = canary().with_status(|s| {
            s.phase(settled)
                .settled_on("rev-a")
                .weight(0)
                .failed_checks(2)
                .marginal_checks(1)
        });
        let plan = plan_at(&canary, &target_b_ready(), clock.now());
        let s = &plan.status;
        assert_eq!(s.phase, Progressing, "from {settled}");
        assert_eq!(s.canary_weight, 0, "from {settled}");
        assert_eq!(
            (s.failed_checks, s.marginal_checks),
            (0, 0),
            "from {settled}"
        );
        assert_eq!(plan.target, TargetScale::Up, "from {settled}");
        assert_eq!(plan.primary, PrimaryAction::Keep, "from {settled}");
        assert_eq!(s.last_applied_spec.as_deref(), Some("rev-b"));
        assert_eq!(s.last_promoted_spec.as_deref(), Some("rev-a"));
        assert_eq!(s.analysis_start_time, at(clock.now()));
        assert_eq!(s.last_transition_time, at(clock.now()));
        assert_eq!(condition(s, conditions::READY), "False");
        assert_eq!(condition(s, conditions::PROMOTED), "False");
        let e = event(&plan, reasons::NEW_REVISION).expect("NewRevision event");
        assert!(!e.warning() && e.message.contains("rev-b"), "{e:?}");
    }
}

#[test]
fn a_new_revision_with_skip_analysis_goes_straight_to_promoting() {
    let clock = Clock::start();
    let canary = canary()
        .skip_analysis()
        .with_status(|s| s.phase(Succeeded).settled_on("rev-a"));
    let plan = plan_at(&canary, &target_b_ready(), clock.now());
    assert_eq!(plan.status.phase, Promoting);
    assert_eq!(plan.primary, PrimaryAction::Promote);
    assert_eq!(plan.status.canary_weight, 0);
    assert_ne!(plan.target, TargetScale::Up, "no canary to analyse");
    assert!(event(&plan, reasons::SKIPPED_ANALYSIS).is_some());
}

#[test]
fn a_new_revision_waits_in_waiting_until_the_start_gate_is_approved() {
    let mut clock = Clock::start();
    let mut canary = canary()
        .requires_start_approval()
        .with_status(|s| s.phase(Succeeded).settled_on("rev-a"));
    let world = target_b_ready();

    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Waiting);
    assert_eq!(
        plan.target,
        TargetScale::Keep,
        "not scaled up before approval"
    );
    assert_eq!(plan.status.last_applied_spec.as_deref(), Some("rev-b"));
    let e = event(&plan, reasons::WAITING_APPROVAL).expect("WaitingApproval event");
    assert!(e.message.contains("serin.dev/approve-start=rev-b"), "{e:?}");
    assert_eq!(condition(&plan.status, conditions::READY), "False");
    apply(&mut canary, &plan);

    clock.advance_secs(30);
    let unapproved = plan_at(&canary, &world, clock.now());
    assert_eq!(
        unapproved.status, plan.status,
        "still waiting, nothing changes"
    );
    assert!(unapproved.events.is_empty());

    let approved = Gates {
        start_approved: true,
        ..Gates::default()
    };
    let plan = plan_with(&canary, &world, approved, None, clock.now());
    assert_eq!(plan.status.phase, Progressing);
    assert_eq!(plan.status.canary_weight, 0);
    assert_eq!(plan.target, TargetScale::Up);
    assert!(event(&plan, reasons::APPROVED).is_some());
}

#[test]
fn an_approved_start_gets_the_full_progress_deadline_however_long_the_approval_took() {
    let mut clock = Clock::start();
    let mut canary = canary()
        .requires_start_approval()
        .progress_deadline_secs(60)
        .with_status(|s| s.phase(Succeeded).settled_on("rev-a"));
    let plan = plan_at(&canary, &target_b_ready(), clock.now());
    assert_eq!(plan.status.phase, Waiting);
    apply(&mut canary, &plan);

    // The approval comes long after the deadline would have passed.
    clock.advance_secs(3600);
    let approved = Gates {
        start_approved: true,
        ..Gates::default()
    };
    let plan = plan_with(&canary, &target_b_ready(), approved, None, clock.now());
    assert_eq!(plan.status.phase, Progressing);
    apply(&mut canary, &plan);

    // The canary was only scaled up now: it has its own deadline to become ready.
    clock.advance_secs(5);
    let starting = observed()
        .target("rev-b", not_ready("0/1 pods ready"))
        .primary("rev-a", ready());
    let plan = plan_at(&canary, &starting, clock.now());
    assert_eq!(plan.status.phase, Progressing, "{:?}", plan.status.message);
    assert!(message(&plan.status).contains("0/1 pods ready"));
}

#[test]
fn a_failed_revision_is_not_retried_and_its_target_stays_scaled_down() {
    let mut clock = Clock::start();
    let canary = canary().with_status(|s| s.phase(Failed).promoted("rev-a").applied("rev-b"));
    clock.advance_secs(3600);
    let plan = plan_at(&canary, &target_b_ready(), clock.now());
    assert_eq!(plan.status.phase, Failed);
    assert_eq!(plan.target, TargetScale::Down);
    assert_eq!(plan.primary, PrimaryAction::Keep);
    assert!(plan.events.is_empty());
}

// ---------------------------------------------------------------------------------------
// The first step and when checks run

#[test]
fn at_weight_zero_a_ready_canary_gets_the_first_step_weight() {
    let table: [(&str, Canary, i32); 3] = [
        ("stepWeight", canary().step_weight(10), 10),
        ("stepWeights", canary().step_weights(&[5, 25, 50]), 5),
        (
            "stepWeight above maxWeight",
            canary().step_weight(30).max_weight(20),
            20,
        ),
    ];
    let clock = Clock::start();
    for (case, canary, first) in table {
        let canary = analysing(canary, &clock, 0, 0);
        let plan = plan_at(&canary, &target_b_ready(), clock.now());
        assert_eq!(plan.status.canary_weight, first, "{case}");
        assert_eq!(plan.status.phase, Progressing, "{case}");
        assert_eq!(plan.status.last_analysis_time, at(clock.now()), "{case}");
        assert!(event(&plan, reasons::ADVANCED).is_some(), "{case}");
    }
}

#[test]
fn no_checks_run_at_weight_zero() {
    let mut clock = Clock::start();
    let canary = analysing(canary().interval_secs(10), &clock, 0, 0);
    clock.advance_secs(3600);
    assert!(!analysis_due(&canary, clock.now()));

    // Even a stray verdict is not counted: no traffic reached the canary.
    let plan = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Fail("no data".into())),
        clock.now(),
    );
    assert_eq!(plan.status.failed_checks, 0);
    assert!(event(&plan, reasons::CHECK_FAILED).is_none());
}

#[test]
fn a_canary_that_is_not_ready_gets_no_traffic() {
    let clock = Clock::start();
    let canary = analysing(canary(), &clock, 0, 0);
    let world = observed()
        .target("rev-b", not_ready("0/3 pods ready"))
        .primary("rev-a", ready());
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.canary_weight, 0);
    assert_eq!(plan.status.phase, Progressing);
    assert!(message(&plan.status).contains("0/3 pods ready"));
    assert!(plan.events.is_empty());
}

#[test]
fn analysis_is_due_only_after_an_interval_since_the_last_step() {
    // (phase, weight, seconds since the last step, due) with a 30s interval.
    let table = [
        (Progressing, 10, 0, false),
        (Progressing, 10, 29, false),
        (Progressing, 10, 30, true),
        (Progressing, 10, 95, true),
        (Progressing, 0, 95, false),
        // Waiting for approval, the canary keeps its traffic and its checks.
        (WaitingPromotion, 50, 29, false),
        (WaitingPromotion, 50, 95, true),
        (Promoting, 50, 95, false),
        (Succeeded, 0, 95, false),
    ];
    let clock = Clock::start();
    for (phase, weight, since_step, due) in table {
        let canary = analysing(canary().interval_secs(30), &clock, weight, since_step)
            .with_status(|s| s.phase(phase));
        assert_eq!(
            analysis_due(&canary, clock.now()),
            due,
            "{phase} at weight {weight}, {since_step}s after the last step"
        );
    }
    assert!(!analysis_due(&canary(), clock.now()), "no status yet");
}

// ---------------------------------------------------------------------------------------
// Stepping

#[test]
fn next_weight_follows_step_weight_or_step_weights_capped_at_max_weight() {
    // (canary, current, next)
    let table = [
        (canary().step_weight(10), 0, 10),
        (canary().step_weight(10), 90, 100),
        (canary().step_weight(10).max_weight(50), 40, 50),
        (canary().step_weight(20).max_weight(50), 40, 50),
        (canary().step_weights(&[1, 5, 25, 50]), 0, 1),
        (canary().step_weights(&[1, 5, 25, 50]), 1, 5),
        (canary().step_weights(&[1, 5, 25, 50]), 25, 50),
        (canary().step_weights(&[1, 5, 25, 50]), 50, 50),
        // Not on the list (the spec changed mid-rollout): the next weight above it.
        (canary().step_weights(&[1, 5, 25, 50]), 10, 25),
    ];
    for (canary, current, next) in table {
        assert_eq!(
            next_weight(&canary, current),
            next,
            "from {current} with {:?}",
            canary.spec.analysis
        );
    }
}

#[test]
fn passing_checks_step_the_weight_up_to_max_weight_then_promote() {
    let mut clock = Clock::start();
    let canary = analysing(
        canary().step_weight(10).max_weight(50).interval_secs(1),
        &clock,
        0,
        0,
    );
    let (weights, last) = run_analysis(canary, &mut clock, Verdict::Pass);
    assert_eq!(weights, [10, 20, 30, 40, 50, 50]);
    assert_eq!(last.status.phase, Promoting);
    assert_eq!(last.primary, PrimaryAction::Promote);
    let e = event(&last, reasons::PROMOTING).expect("Promoting event");
    assert!(e.message.contains("rev-b"), "{e:?}");
}

#[test]
fn step_weights_are_followed_exactly() {
    let mut clock = Clock::start();
    let canary = analysing(canary().step_weights(&[1, 5, 25, 50]), &clock, 0, 0);
    let (weights, last) = run_analysis(canary, &mut clock, Verdict::Pass);
    assert_eq!(weights, [1, 5, 25, 50, 50]);
    assert_eq!(last.status.phase, Promoting);
}

#[test]
fn max_weight_caps_the_last_step() {
    let mut clock = Clock::start();
    let canary = analysing(canary().step_weight(20).max_weight(50), &clock, 0, 0);
    let (weights, last) = run_analysis(canary, &mut clock, Verdict::Pass);
    assert_eq!(weights, [20, 40, 50, 50]);
    assert_eq!(last.status.phase, Promoting);
}

#[test]
fn traffic_increase_waits_for_its_approval_when_required() {
    let clock = Clock::start();
    let canary = analysing(
        canary()
            .requires_traffic_increase_approval()
            .interval_secs(10),
        &clock,
        10,
        10,
    );
    let plan = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(plan.status.canary_weight, 10);
    assert!(message(&plan.status).contains("serin.dev/approve-traffic-increase=rev-b@10"));

    let approved = Gates {
        traffic_increase_approved_at: Some(10),
        ..Gates::default()
    };
    let plan = plan_with(
        &canary,
        &target_b_ready(),
        approved,
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(plan.status.canary_weight, 20);
}

#[test]
fn a_waiting_traffic_increase_is_announced_once_with_the_gate_to_open() {
    let clock = Clock::start();
    let mut canary = analysing(
        canary()
            .requires_traffic_increase_approval()
            .interval_secs(10),
        &clock,
        10,
        10,
    );
    let first = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    let announced: Vec<_> = first
        .events
        .iter()
        .filter(|e| e.reason == reasons::WAITING_APPROVAL)
        .collect();
    assert_eq!(announced.len(), 1, "{:?}", first.events);
    assert!(
        announced[0]
            .message
            .contains("serin.dev/approve-traffic-increase=rev-b@10")
    );

    canary.status = Some(first.status);
    let next_round = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(next_round.status.canary_weight, 10);
    assert!(
        next_round.events.is_empty(),
        "the wait is not announced again: {:?}",
        next_round.events
    );
}

// ---------------------------------------------------------------------------------------
// Failed, marginal and fatal checks

#[test]
fn a_failed_check_below_the_threshold_keeps_the_weight_and_warns() {
    let clock = Clock::start();
    let canary = analysing(canary().threshold(2).interval_secs(10), &clock, 20, 10);
    let why = "request-success-rate 95.1% < 99%";
    let plan = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Fail(why.into())),
        clock.now(),
    );
    assert_eq!(plan.status.phase, Progressing);
    assert_eq!(plan.status.canary_weight, 20);
    assert_eq!(plan.status.failed_checks, 1);
    assert_eq!(plan.status.last_analysis_time, at(clock.now()));
    assert_eq!(
        plan.target,
        TargetScale::Up,
        "the canary keeps its replicas during analysis"
    );
    let e = event(&plan, reasons::CHECK_FAILED).expect("CheckFailed event");
    assert!(e.warning());
    assert!(
        e.message.contains(why) && e.message.contains("1/2"),
        "{e:?}"
    );
    assert!(message(&plan.status).contains(why));
}

#[test]
fn reaching_the_failed_checks_threshold_rolls_back() {
    let clock = Clock::start();
    let canary =
        analysing(canary().threshold(2), &clock, 30, 60).with_status(|s| s.failed_checks(1));
    let why = "request-duration 812ms > 500ms";
    let plan = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Fail(why.into())),
        clock.now(),
    );
    let s = &plan.status;
    assert_eq!(s.phase, Failed);
    assert_eq!(s.canary_weight, 0);
    assert_eq!(s.failed_checks, 2);
    assert_eq!(plan.target, TargetScale::Down);
    assert_eq!(plan.primary, PrimaryAction::Keep);
    assert_eq!(condition(s, conditions::READY), "False");
    assert_eq!(condition(s, conditions::PROMOTED), "False");
    assert!(message(s).contains(why), "{:?}", s.message);
    assert_eq!(s.last_promoted_spec.as_deref(), Some("rev-a"));
    let e = event(&plan, reasons::ROLLED_BACK).expect("RolledBack event");
    assert!(e.warning() && e.message.contains(why), "{e:?}");
}

#[test]
fn a_hold_keeps_the_weight_and_counts_a_marginal_check() {
    let clock = Clock::start();
    let canary = analysing(canary(), &clock, 20, 60).with_status(|s| s.marginal_checks(2));
    let plan = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Hold("judge score 80 (marginal)".into())),
        clock.now(),
    );
    assert_eq!(plan.status.phase, Progressing);
    assert_eq!(plan.status.canary_weight, 20);
    assert_eq!(plan.status.marginal_checks, 3);
    assert_eq!(plan.status.failed_checks, 0);
    assert_eq!(plan.status.last_analysis_time, at(clock.now()));
    assert!(message(&plan.status).contains("judge score 80"));
    assert!(event(&plan, reasons::HOLD).is_some_and(|e| !e.warning()));
}

#[test]
fn a_rollback_verdict_rolls_back_immediately() {
    let clock = Clock::start();
    let canary = analysing(canary().threshold(5), &clock, 20, 60);
    let why = "canary error rate worse than primary (p < 0.001)";
    let plan = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Rollback(why.into())),
        clock.now(),
    );
    assert_eq!(plan.status.phase, Failed);
    assert_eq!(plan.status.canary_weight, 0);
    assert_eq!(plan.target, TargetScale::Down);
    assert_eq!(message(&plan.status), why);
    assert!(event(&plan, reasons::ROLLED_BACK).is_some_and(|e| e.warning()));
}

// ---------------------------------------------------------------------------------------
// Progress deadline

#[test]
fn a_canary_not_ready_past_the_progress_deadline_rolls_back_with_a_message() {
    let clock = Clock::start();
    let canary = canary().progress_deadline_secs(60).with_status(|s| {
        s.phase(Progressing)
            .promoted("rev-a")
            .applied("rev-b")
            .analysis_started_at(clock.ago_secs(61))
    });
    let world = observed()
        .target("rev-b", not_ready("ImagePullBackOff"))
        .primary("rev-a", ready());
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Failed);
    assert_eq!(plan.status.canary_weight, 0);
    assert_eq!(plan.target, TargetScale::Down);
    let m = message(&plan.status);
    assert!(
        m.contains("progress deadline") && m.contains("ImagePullBackOff"),
        "{m}"
    );
}

#[test]
fn a_canary_not_ready_before_the_progress_deadline_waits() {
    let clock = Clock::start();
    let canary = canary().progress_deadline_secs(60).with_status(|s| {
        s.phase(Progressing)
            .promoted("rev-a")
            .applied("rev-b")
            .analysis_started_at(clock.ago_secs(59))
    });
    let world = observed()
        .target("rev-b", not_ready("0/1 pods ready"))
        .primary("rev-a", ready());
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Progressing);
    assert_eq!(plan.status.canary_weight, 0);
    assert_eq!(
        plan.target,
        TargetScale::Up,
        "the canary keeps its replicas during analysis"
    );
    assert!(message(&plan.status).contains("0/1 pods ready"));
    assert!(plan.events.is_empty());
}

#[test]
fn a_canary_that_stops_being_ready_late_in_a_long_analysis_gets_the_deadline_to_recover() {
    let clock = Clock::start();
    // (seconds since the last step, taken while ready, and the phase that follows) for an
    // analysis started 2000s ago with a 600s deadline.
    let table = [(30, Progressing), (600, Progressing), (601, Failed)];
    for (since_step, next) in table {
        let canary = canary().with_status(|s| {
            s.phase(Progressing)
                .promoted("rev-a")
                .applied("rev-b")
                .weight(50)
                .analysis_started_at(clock.ago_secs(2000))
                .last_analysed_at(clock.ago_secs(since_step))
        });
        let world = observed()
            .target("rev-b", not_ready("1/2 pods ready"))
            .primary("rev-a", ready());
        let plan = plan_at(&canary, &world, clock.now());
        assert_eq!(
            plan.status.phase, next,
            "{since_step}s after the last step: {:?}",
            plan.status.message
        );
        assert!(message(&plan.status).contains("1/2 pods ready"));
    }
}

// ---------------------------------------------------------------------------------------
// A new revision in flight

#[test]
fn a_new_revision_during_analysis_or_promotion_restarts_from_weight_zero() {
    let clock = Clock::start();
    for phase in [Progressing, WaitingPromotion, Promoting] {
        let canary = analysing(canary().max_weight(50), &clock, 50, 60)
            .with_status(|s| s.phase(phase).failed_checks(1).marginal_checks(1));
        let world = observed()
            .target("rev-c", ready())
            .primary("rev-a", ready());
        let plan = plan_with(
            &canary,
            &world,
            Gates {
                promotion_approved: true,
                ..Gates::default()
            },
            None,
            clock.now(),
        );
        let s = &plan.status;
        assert_eq!(s.phase, Progressing, "from {phase}");
        assert_eq!(s.canary_weight, 0, "from {phase}");
        assert_eq!((s.failed_checks, s.marginal_checks), (0, 0), "from {phase}");
        assert_eq!(
            s.last_applied_spec.as_deref(),
            Some("rev-c"),
            "from {phase}"
        );
        assert_eq!(
            s.last_promoted_spec.as_deref(),
            Some("rev-a"),
            "from {phase}"
        );
        assert_ne!(
            plan.primary,
            PrimaryAction::Promote,
            "from {phase}: rev-c was never analysed"
        );
        assert_eq!(plan.target, TargetScale::Up, "from {phase}");
        assert!(event(&plan, reasons::RESTARTED).is_some(), "from {phase}");
    }
}

// ---------------------------------------------------------------------------------------
// Promotion approval and abort

#[test]
fn at_max_weight_promotion_waits_for_approval_and_only_promotes_when_approved() {
    let mut clock = Clock::start();
    let mut canary = analysing(
        canary().max_weight(50).requires_promotion_approval(),
        &clock,
        50,
        60,
    );
    let plan = plan_with(
        &canary,
        &target_b_ready(),
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(plan.status.phase, WaitingPromotion);
    assert_eq!(plan.primary, PrimaryAction::Keep);
    assert_eq!(plan.status.canary_weight, 50);
    assert_eq!(condition(&plan.status, conditions::READY), "False");
    let e = event(&plan, reasons::WAITING_APPROVAL).expect("WaitingApproval event");
    assert!(
        e.message.contains("serin.dev/approve-promotion=rev-b"),
        "{e:?}"
    );
    apply(&mut canary, &plan);

    for _ in 0..3 {
        clock.advance_secs(60);
        let waiting = plan_at(&canary, &target_b_ready(), clock.now());
        assert_eq!(waiting.status, plan.status);
        assert_eq!(waiting.primary, PrimaryAction::Keep);
    }

    let approved = Gates {
        promotion_approved: true,
        ..Gates::default()
    };
    let plan = plan_with(&canary, &target_b_ready(), approved, None, clock.now());
    assert_eq!(plan.status.phase, Promoting);
    assert_eq!(plan.primary, PrimaryAction::Promote);
    assert!(event(&plan, reasons::APPROVED).is_some());
}

#[test]
fn the_abort_gate_rolls_back_while_waiting_or_analysing() {
    let clock = Clock::start();
    for phase in [Waiting, Progressing, WaitingPromotion] {
        let canary = analysing(canary(), &clock, 40, 5).with_status(|s| s.phase(phase));
        let abort = Gates {
            abort: true,
            promotion_approved: true,
            start_approved: true,
            ..Gates::default()
        };
        let plan = plan_with(
            &canary,
            &target_b_ready(),
            abort,
            Some(Verdict::Pass),
            clock.now(),
        );
        assert_eq!(plan.status.phase, Failed, "from {phase}");
        assert_eq!(plan.status.canary_weight, 0, "from {phase}");
        assert_eq!(plan.target, TargetScale::Down, "from {phase}");
        assert_eq!(plan.primary, PrimaryAction::Keep, "from {phase}");
        assert!(message(&plan.status).contains("aborted"), "from {phase}");
        assert_eq!(condition(&plan.status, conditions::PROMOTED), "False");
    }
}

// ---------------------------------------------------------------------------------------
// Promotion

fn promoting(canary: Canary, clock: &Clock, weight: i32, since_step: u64) -> Canary {
    analysing(canary, clock, weight, since_step).with_status(|s| s.phase(Promoting))
}

#[test]
fn promoting_waits_for_the_primary_to_run_the_revision_and_be_ready() {
    let clock = Clock::start();
    let canary = promoting(canary(), &clock, 50, 60);
    // (primary, what the message mentions)
    let table = [
        (Some(("rev-a", ready())), "copying rev-b"),
        (
            Some(("rev-b", not_ready("1/2 replicas updated"))),
            "1/2 replicas updated",
        ),
    ];
    for (primary, says) in table {
        let mut world = observed().target("rev-b", ready());
        if let Some((revision, readiness)) = primary {
            world = world.primary(revision, readiness);
        }
        let plan = plan_at(&canary, &world, clock.now());
        assert_eq!(plan.status.phase, Promoting, "{says}");
        assert_eq!(plan.primary, PrimaryAction::Promote, "{says}");
        assert_eq!(plan.status.canary_weight, 50, "{says}: traffic stays put");
        assert!(
            message(&plan.status).contains(says),
            "{:?}",
            plan.status.message
        );
    }
}

#[test]
fn step_weight_promotion_moves_traffic_back_to_the_primary_once_per_interval() {
    let mut clock = Clock::start();
    let mut canary = promoting(
        canary().step_weight_promotion(20).interval_secs(10),
        &clock,
        50,
        10,
    );
    let world = observed()
        .target("rev-b", ready())
        .primary("rev-b", ready());
    let mut weights = Vec::new();
    let mut record = |canary: &mut Canary, now| {
        let plan = plan_at(canary, &world, now);
        apply(canary, &plan);
        weights.push((plan.status.phase, plan.status.canary_weight));
        plan
    };
    record(&mut canary, clock.now());
    clock.advance_secs(5);
    record(&mut canary, clock.now()); // within the interval: no step
    clock.advance_secs(5);
    record(&mut canary, clock.now());
    clock.advance_secs(10);
    let finalising = record(&mut canary, clock.now());
    assert_eq!(
        weights,
        [
            (Promoting, 30),
            (Promoting, 30),
            (Promoting, 10),
            (Finalising, 0)
        ]
    );
    assert_eq!(finalising.primary, PrimaryAction::Promote);
}

#[test]
fn without_step_weight_promotion_all_traffic_returns_to_the_primary_at_once() {
    let clock = Clock::start();
    let canary = promoting(canary(), &clock, 100, 0);
    let world = observed()
        .target("rev-b", ready())
        .primary("rev-b", ready());
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Finalising);
    assert_eq!(plan.status.canary_weight, 0);
}

#[test]
fn finalising_succeeds_with_the_promoted_revision_and_scales_the_target_down() {
    let clock = Clock::start();
    let canary = analysing(canary(), &clock, 0, 0).with_status(|s| s.phase(Finalising));
    let world = observed()
        .target("rev-b", ready())
        .primary("rev-b", ready());
    let plan = plan_at(&canary, &world, clock.now());
    let s = &plan.status;
    assert_eq!(s.phase, Succeeded);
    assert_eq!(s.canary_weight, 0);
    assert_eq!(s.last_promoted_spec.as_deref(), Some("rev-b"));
    assert_eq!(s.last_applied_spec.as_deref(), Some("rev-b"));
    assert_eq!(plan.target, TargetScale::Down);
    assert_eq!(condition(s, conditions::READY), "True");
    assert_eq!(condition(s, conditions::PROMOTED), "True");
    assert!(event(&plan, reasons::SUCCEEDED).is_some());
}

#[test]
fn a_whole_rollout_goes_from_bootstrap_to_succeeded() {
    let mut sim = Sim::new(
        canary()
            .step_weight(25)
            .max_weight(50)
            .step_weight_promotion(25)
            .interval_secs(5),
        7,
    );
    // No randomness: everything becomes ready, every check passes.
    sim.p_ready = 100;
    let mut phases = vec![];
    for _ in 0..10 {
        let plan = sim.tick(Gates::default(), || Verdict::Pass);
        if phases.last() != Some(&plan.status.phase) {
            phases.push(plan.status.phase);
        }
        sim.clock.advance_secs(5);
    }
    sim.target_revision = "rev-2".into();
    for _ in 0..15 {
        let plan = sim.tick(Gates::default(), || Verdict::Pass);
        if phases.last() != Some(&plan.status.phase) {
            phases.push(plan.status.phase);
        }
        sim.clock.advance_secs(5);
    }
    assert_eq!(
        phases,
        [
            Initializing,
            Initialized,
            Progressing,
            Promoting,
            Finalising,
            Succeeded
        ]
    );
    let status = sim.canary.status.clone().unwrap_or_default();
    assert_eq!(status.last_promoted_spec.as_deref(), Some("rev-2"));
    assert_eq!(
        sim.primary.as_ref().and_then(|p| p.revision.as_deref()),
        Some("rev-2")
    );
    assert!(!sim.target_scaled_up);
}

// ---------------------------------------------------------------------------------------
// Suspend and a missing target

#[test]
fn a_suspended_canary_makes_no_change() {
    let clock = Clock::start();
    for phase in [Initializing, Initialized, Progressing, Promoting, Succeeded] {
        let canary =
            analysing(canary().suspended(), &clock, 20, 600).with_status(|s| s.phase(phase));
        // A new revision, ready everything, a due verdict: still nothing happens.
        let world = observed()
            .target("rev-c", ready())
            .primary("rev-b", ready());
        let plan = plan_with(
            &canary,
            &world,
            Gates::default(),
            Some(Verdict::Pass),
            clock.now(),
        );
        let before = canary.status.clone().unwrap_or_default();
        let s = &plan.status;
        assert_eq!(
            (s.phase, s.canary_weight, &s.last_applied_spec),
            (
                before.phase,
                before.canary_weight,
                &before.last_applied_spec
            ),
            "in {phase}"
        );
        assert_eq!(plan.primary, PrimaryAction::Keep, "in {phase}");
        assert_eq!(plan.target, TargetScale::Keep, "in {phase}");
        assert!(plan.events.is_empty(), "in {phase}");
        assert!(message(s).contains("suspend"), "in {phase}");
    }
}

#[test]
fn a_missing_target_gives_a_message_and_makes_no_change() {
    let clock = Clock::start();
    for phase in [Initializing, Progressing, Succeeded] {
        let canary = analysing(canary(), &clock, 20, 600).with_status(|s| s.phase(phase));
        let plan = plan_with(
            &canary,
            &observed().primary("rev-a", ready()),
            Gates::default(),
            Some(Verdict::Pass),
            clock.now(),
        );
        let before = canary.status.clone().unwrap_or_default();
        assert_eq!(plan.status.phase, before.phase, "in {phase}");
        assert_eq!(
            plan.status.canary_weight, before.canary_weight,
            "in {phase}"
        );
        assert_eq!(plan.primary, PrimaryAction::Keep, "in {phase}");
        assert_eq!(plan.target, TargetScale::Keep, "in {phase}");
        assert!(plan.events.is_empty(), "in {phase}");
        assert!(
            message(&plan.status).contains("Deployment podinfo not found"),
            "{:?}",
            plan.status.message
        );
    }
}

// ---------------------------------------------------------------------------------------
// Idempotence

#[test]
fn re_running_a_settled_phase_yields_the_same_status() {
    let mut clock = Clock::start();
    let rev_a = observed()
        .target("rev-a", ready())
        .primary("rev-a", ready());
    let table: [(&str, Canary, Observed); 6] = [
        (
            "Initialized",
            canary().with_status(|s| s.phase(Initialized).settled_on("rev-a")),
            rev_a.clone(),
        ),
        (
            "Succeeded",
            canary().with_status(|s| s.phase(Succeeded).settled_on("rev-a")),
            rev_a.clone(),
        ),
        (
            "Failed",
            canary().with_status(|s| s.phase(Failed).promoted("rev-a").applied("rev-b")),
            target_b_ready(),
        ),
        (
            "Waiting for approval to start",
            canary()
                .requires_start_approval()
                .with_status(|s| s.phase(Waiting).promoted("rev-a").applied("rev-b")),
            target_b_ready(),
        ),
        (
            "Initializing with the primary not ready",
            canary(),
            observed()
                .target("rev-a", ready())
                .primary("rev-a", not_ready("0/1")),
        ),
        (
            "Progressing between two checks",
            analysing(canary(), &clock, 20, 0),
            target_b_ready(),
        ),
    ];
    for (case, canary, world) in table {
        let mut canary = canary;
        // Settle once (conditions, message), then the status must not move.
        let first = plan_at(&canary, &world, clock.now());
        apply(&mut canary, &first);
        for secs in [0, 1, 10] {
            clock.advance_secs(secs);
            let again = plan_at(&canary, &world, clock.now());
            assert_eq!(again.status, first.status, "{case} after {secs}s more");
            assert!(again.events.is_empty(), "{case}: {:?}", again.events);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Invariants over random rollouts

/// A tiny world the plan acts on: the target, the primary and a clock. It applies each
/// plan's actions the way the controller would, with seeded randomness for readiness.
struct Sim {
    canary: Canary,
    clock: Clock,
    rng: Rng,
    target_revision: String,
    target_scaled_up: bool,
    primary: Option<Primary>,
    /// Chance (percent) that a workload is ready when observed.
    p_ready: u64,
}

impl Sim {
    fn new(canary: Canary, seed: u64) -> Self {
        Sim {
            canary,
            clock: Clock::start(),
            rng: Rng::seeded(seed),
            target_revision: "rev-1".into(),
            target_scaled_up: true,
            primary: None,
            p_ready: 80,
        }
    }

    fn readiness(&mut self, up: bool) -> Readiness {
        if up && self.rng.chance(self.p_ready) {
            Readiness::Ready
        } else {
            Readiness::NotReady("pods not ready".into())
        }
    }

    fn observe(&mut self) -> Observed {
        let up = self.target_scaled_up;
        let target = crate::rollout::plan::Target {
            revision: self.target_revision.clone(),
            ready: self.readiness(up),
        };
        let primary = self.primary.clone().map(|p| Primary {
            ready: self.readiness(true),
            ..p
        });
        Observed {
            target: Some(target),
            primary,
            ..Default::default()
        }
    }

    /// One reconcile: observe, plan (with a verdict when the checks are due), act, and
    /// write the status back. Returns the plan and what was observed.
    fn tick_observed(
        &mut self,
        gates: Gates,
        verdict: impl FnOnce() -> Verdict,
    ) -> (Plan, Observed) {
        let observed = self.observe();
        let now = self.clock.now();
        let verdict = analysis_due(&self.canary, now).then(verdict);
        let plan = plan_with(&self.canary, &observed, gates, verdict, now);
        match plan.primary {
            PrimaryAction::Keep => {}
            // As `act` does: the target is copied only if it runs the analysed revision.
            PrimaryAction::Promote
                if plan.status.last_applied_spec.as_deref() != Some(&self.target_revision) => {}
            PrimaryAction::Bootstrap | PrimaryAction::Promote => {
                self.primary = Some(Primary {
                    revision: Some(self.target_revision.clone()),
                    ready: Readiness::Ready,
                });
            }
        }
        match plan.target {
            TargetScale::Keep => {}
            TargetScale::Up => self.target_scaled_up = true,
            TargetScale::Down => self.target_scaled_up = false,
        }
        apply(&mut self.canary, &plan);
        (plan, observed)
    }

    fn tick(&mut self, gates: Gates, verdict: impl FnOnce() -> Verdict) -> Plan {
        self.tick_observed(gates, verdict).0
    }
}

/// A random but valid Canary spec.
fn random_canary(rng: &mut Rng) -> Canary {
    let mut c = canary()
        .interval_secs(1 + rng.below(60))
        .threshold(1 + rng.below(3) as i32)
        .progress_deadline_secs(5 + rng.below(120) as i32);
    if rng.chance(50) {
        let step = 1 + rng.below(60) as i32;
        c = c.step_weight(step);
        if rng.chance(60) {
            c = c.max_weight(step + rng.below((101 - step) as u64) as i32);
        }
    } else {
        let mut weights: Vec<i32> = (0..1 + rng.below(6))
            .map(|_| 1 + rng.below(100) as i32)
            .collect();
        weights.sort_unstable();
        weights.dedup();
        c = c.step_weights(&weights);
    }
    if rng.chance(40) {
        c = c.step_weight_promotion(1 + rng.below(100) as i32);
    }
    if rng.chance(10) {
        c = c.skip_analysis();
    }
    if rng.chance(25) {
        c = c.requires_start_approval();
    }
    if rng.chance(25) {
        c = c.requires_traffic_increase_approval();
    }
    if rng.chance(25) {
        c = c.requires_promotion_approval();
    }
    c
}

fn random_gates(rng: &mut Rng, weight: i32) -> Gates {
    Gates {
        start_approved: rng.chance(30),
        traffic_increase_approved_at: rng.chance(50).then(|| u32::try_from(weight).unwrap_or(0)),
        promotion_approved: rng.chance(30),
        abort: rng.chance(2),
    }
}

fn random_verdict(rng: &mut Rng) -> Verdict {
    match rng.below(100) {
        0..60 => Verdict::Pass,
        60..75 => Verdict::Hold("marginal".into()),
        75..97 => Verdict::Fail("error rate too high".into()),
        _ => Verdict::Rollback("regression".into()),
    }
}

/// Runs `ticks` random reconciles for each of `seeds`, calling `check` after each one with
/// the status before, the plan, what was observed and the Sim after acting.
fn random_rollouts(
    seeds: std::ops::Range<u64>,
    ticks: usize,
    mut check: impl FnMut(u64, &CanaryStatus, &Plan, &Observed, &Sim),
) {
    for seed in seeds {
        let mut rng = Rng::seeded(seed);
        let mut sim = Sim::new(random_canary(&mut rng), seed ^ 0x5EED);
        let interval = sim.canary.spec.analysis.interval().as_secs();
        let mut revision = 1;
        for _ in 0..ticks {
            if rng.chance(4) {
                revision += 1;
                sim.target_revision = format!("rev-{revision}");
            }
            let weight = sim.canary.status.as_ref().map_or(0, |s| s.canary_weight);
            let gates = random_gates(&mut rng, weight);
            let before = sim.canary.status.clone().unwrap_or_default();
            let verdict = random_verdict(&mut rng);
            let (plan, observed) = sim.tick_observed(gates, || verdict);
            check(seed, &before, &plan, &observed, &sim);
            sim.clock.advance_secs(rng.below(2 * interval + 1));
        }
    }
}

#[test]
fn random_rollouts_keep_the_weight_within_bounds_and_off_unready_canaries() {
    random_rollouts(0..300, 200, |seed, before, plan, observed, sim| {
        let s = &plan.status;
        let max = i32::try_from(sim.canary.spec.analysis.max_weight()).unwrap_or(100);
        let ctx = || format!("seed {seed}: {:?} -> {:?}", before.phase, s.phase);
        assert!((0..=100).contains(&s.canary_weight), "{}", ctx());
        assert!(
            s.canary_weight <= max,
            "{}: weight {} > max {max}",
            ctx(),
            s.canary_weight
        );
        if s.canary_weight > before.canary_weight {
            let target = observed.target.as_ref().expect("target observed");
            assert!(
                target.ready.is_ready(),
                "{}: weight raised to {} while the canary was not ready",
                ctx(),
                s.canary_weight
            );
            assert_eq!(s.phase, Progressing, "{}", ctx());
        }
        if plan.target == TargetScale::Down || !sim.target_scaled_up {
            assert_eq!(
                s.canary_weight,
                0,
                "{}: traffic to a scaled-down canary",
                ctx()
            );
        }
        if s.canary_weight > 0 {
            assert!(
                matches!(s.phase, Progressing | WaitingPromotion | Promoting),
                "{}: weight {} in a settled phase",
                ctx(),
                s.canary_weight
            );
        }
    });
}

#[test]
fn random_rollouts_route_to_the_canary_only_while_it_is_ready_and_analysed() {
    random_rollouts(0..300, 200, |seed, before, plan, observed, _| {
        let Traffic::Route { canary_weight } = plan.traffic else {
            return;
        };
        let target = observed.target.as_ref().expect("target observed");
        if canary_weight > 0 {
            assert!(
                target.ready.is_ready(),
                "seed {seed}: weight {canary_weight} to an unready canary ({:?} -> {:?})",
                before.phase,
                plan.status.phase
            );
            assert_eq!(
                plan.status.last_applied_spec.as_ref(),
                Some(&target.revision),
                "seed {seed}: traffic to an unanalysed revision"
            );
        }
        // A decision is in status before any route reflects it: the route never sends
        // more than the status it is written after.
        assert!(
            i64::from(canary_weight) <= i64::from(plan.status.canary_weight),
            "seed {seed}: route {canary_weight} ahead of status {}",
            plan.status.canary_weight
        );
        assert!(
            observed.primary.is_some(),
            "seed {seed}: a route to a primary that does not exist"
        );
    });
}

#[test]
fn random_rollouts_settle_only_while_the_primary_runs_the_promoted_revision() {
    random_rollouts(0..300, 200, |seed, before, plan, _, sim| {
        let settled = matches!(plan.status.phase, Initialized | Succeeded);
        if settled && before.phase != plan.status.phase {
            let runs = sim.primary.as_ref().and_then(|p| p.revision.clone());
            assert_eq!(
                runs, plan.status.last_promoted_spec,
                "seed {seed}: {:?} while the primary runs {runs:?}",
                plan.status.phase
            );
        }
    });
}

#[test]
fn random_suspended_canaries_plan_no_write() {
    random_rollouts(0..100, 100, |seed, _, _, observed, sim| {
        let canary = sim.canary.clone().suspended();
        let plan = plan_at(&canary, observed, sim.clock.now());
        assert_eq!(plan.traffic, Traffic::Untouched, "seed {seed}");
        assert_eq!(plan.primary, PrimaryAction::Keep, "seed {seed}");
        assert_eq!(plan.target, TargetScale::Keep, "seed {seed}");
        assert!(plan.events.is_empty(), "seed {seed}");
    });
}

#[test]
fn random_rollouts_never_promote_an_unanalysed_revision() {
    // Revisions that passed the checks at max weight, per seed.
    let mut analysed: HashSet<(u64, String)> = HashSet::new();
    random_rollouts(0..300, 200, |seed, before, plan, observed, sim| {
        let revision = &observed.target.as_ref().expect("target observed").revision;
        let max = i32::try_from(sim.canary.spec.analysis.max_weight()).unwrap_or(100);
        if before.phase == Progressing
            && before.canary_weight >= max
            && before.last_applied_spec.as_ref() == Some(revision)
            && matches!(plan.status.phase, Promoting | WaitingPromotion)
        {
            analysed.insert((seed, revision.clone()));
        }
        let skip = sim.canary.spec.skip_analysis;
        if plan.primary == PrimaryAction::Promote && !skip {
            assert!(
                analysed.contains(&(seed, revision.clone())),
                "seed {seed}: promoting {revision}, which never passed at max weight"
            );
            assert_eq!(plan.status.last_applied_spec.as_ref(), Some(revision));
        }
        if plan.status.phase == Succeeded && before.phase != Succeeded && !skip {
            let promoted = plan.status.last_promoted_spec.clone().unwrap_or_default();
            assert!(
                analysed.contains(&(seed, promoted.clone())),
                "seed {seed}: {promoted} succeeded without analysis"
            );
        }
    });
}

#[test]
fn random_rollouts_restarted_at_any_moment_settle_on_the_same_status() {
    // A controller that restarts re-plans from the status it wrote, with the same world.
    // Re-planning with no new verdict and no gates must reach a fixed point within a few
    // reconciles, and stay there.
    random_rollouts(0..200, 150, |seed, _before, plan, observed, sim| {
        let mut canary = sim.canary.clone();
        let now = sim.clock.now();
        let mut last = plan.status.clone();
        let mut settled = false;
        for _ in 0..6 {
            let again = plan_at(&canary, observed, now);
            if again.status == last && again.events.is_empty() {
                settled = true;
                break;
            }
            last = again.status.clone();
            apply(&mut canary, &again);
        }
        assert!(
            settled,
            "seed {seed}: no fixed point from {:?} (last {:?})",
            plan.status.phase, last.phase
        );
    });
}

#[test]
fn the_random_rollouts_reach_every_phase() {
    // Guards the loops above against testing nothing: the random worlds do visit every
    // phase the plan can produce.
    let mut seen = HashSet::new();
    random_rollouts(0..300, 200, |_, _, plan, _, _| {
        seen.insert(plan.status.phase);
    });
    for phase in [
        Initializing,
        Initialized,
        Waiting,
        Progressing,
        WaitingPromotion,
        Promoting,
        Finalising,
        Succeeded,
        Failed,
    ] {
        assert!(seen.contains(&phase), "{phase} never reached");
    }
}

#[test]
fn requeue_is_never_zero() {
    random_rollouts(0..100, 100, |seed, _, plan, _, _| {
        assert!(
            plan.requeue >= Duration::from_millis(200),
            "seed {seed}: requeue {:?} in {:?}",
            plan.requeue,
            plan.status.phase
        );
    });
}
