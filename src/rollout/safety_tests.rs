//! Regression tests for the traffic-safety rules of DESIGN.md: each is a way a release
//! went wrong in a real cluster (the primary's revision at bootstrap, traffic to an
//! unready primary or canary, checks while waiting for promotion, one approval per step,
//! suspend, a new revision during promotion, and a transition planned twice).

use crate::api::{Canary, CanaryPhase::*};
use crate::rollout::conditions::reasons;
use crate::rollout::fixtures::{
    Clock, analysing_rev_b, apply, canary, not_ready, observed, plan_at, plan_with, ready,
    rev_b_ready,
};
use crate::rollout::plan::{
    Gates, PrimaryAction, Severity, TargetScale, Traffic, Verdict, analysis_due, needs,
};

fn route(weight: u32) -> Traffic {
    Traffic::Route {
        canary_weight: weight,
    }
}

// 1. Initialization takes the primary's revision, not the target's.

#[test]
fn a_target_changed_during_bootstrap_is_analysed_not_taken_as_promoted() {
    let clock = Clock::start();
    let mut canary = canary().with_status(|s| s.phase(Initializing));
    // The primary was built from rev-a; Flux applied rev-b while it started.
    let world = rev_b_ready();
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Initialized);
    assert_eq!(plan.status.last_promoted_spec.as_deref(), Some("rev-a"));
    assert_eq!(plan.status.last_applied_spec.as_deref(), Some("rev-a"));

    apply(&mut canary, &plan);
    let next = plan_at(&canary, &world, clock.now());
    assert_eq!(next.status.phase, Progressing);
    assert_eq!(next.status.last_applied_spec.as_deref(), Some("rev-b"));
}

// 2. Traffic moves to the primary only once it is ready.

#[test]
fn the_apex_service_and_route_wait_for_the_primary_to_be_ready() {
    let clock = Clock::start();
    let mut canary = canary().with_status(|s| s.phase(Initializing));
    let plan = plan_at(&canary, &observed().target("rev-a", ready()), clock.now());
    assert_eq!(plan.primary, PrimaryAction::Bootstrap);
    assert_eq!(plan.traffic, Traffic::Prepare);

    apply(&mut canary, &plan);
    let starting = observed()
        .target("rev-a", ready())
        .primary("rev-a", not_ready("0/2 replicas available"));
    assert_eq!(
        plan_at(&canary, &starting, clock.now()).traffic,
        Traffic::Prepare
    );

    let up = observed()
        .target("rev-a", ready())
        .primary("rev-a", ready());
    assert_eq!(plan_at(&canary, &up, clock.now()).traffic, route(0));
}

// 3. A canary that stops being ready loses its traffic at once.

#[test]
fn a_canary_that_stops_being_ready_loses_its_traffic_at_once_and_gets_it_back() {
    let clock = Clock::start();
    let canary = analysing_rev_b(canary().interval_secs(60), &clock, 30, 10);
    let crashing = observed()
        .target("rev-b", not_ready("1 of 3 replicas available"))
        .primary("rev-a", ready());
    let plan = plan_at(&canary, &crashing, clock.now());
    assert_eq!(plan.traffic, route(0));
    assert_eq!(
        (plan.status.phase, plan.status.canary_weight),
        (Progressing, 30)
    );
    assert!(plan.status.message.unwrap().contains("gets no traffic"));
    assert!(!needs(&canary, &crashing, clock.now()).analysis);

    let recovered = rev_b_ready();
    assert_eq!(plan_at(&canary, &recovered, clock.now()).traffic, route(30));
}

// 4. WaitingPromotion keeps checking and keeps the deadline.

fn waiting_promotion(clock: &Clock, since_check: u64) -> Canary {
    analysing_rev_b(
        canary()
            .requires_promotion_approval()
            .max_weight(50)
            .threshold(2)
            .interval_secs(10),
        clock,
        50,
        since_check,
    )
    .with_status(|s| s.phase(WaitingPromotion))
}

#[test]
fn while_a_promotion_waits_for_approval_the_checks_keep_running_and_roll_back_a_degrading_canary() {
    let clock = Clock::start();
    let mut canary = waiting_promotion(&clock, 10);
    let world = rev_b_ready();
    assert!(analysis_due(&canary, clock.now()));
    assert!(needs(&canary, &world, clock.now()).analysis);
    for (round, phase) in [(1, WaitingPromotion), (2, Failed)] {
        let plan = plan_with(
            &canary,
            &world,
            Gates::default(),
            Some(Verdict::Fail(
                "request-success-rate 80.00 is below the minimum 99".into(),
            )),
            clock.now(),
        );
        assert_eq!(plan.status.phase, phase, "round {round}");
        assert_eq!(plan.status.failed_checks, round);
        apply(&mut canary, &plan);
        canary = canary.with_status(|s| s.last_analysed_at(clock.ago_secs(10)));
    }
    assert_eq!(canary.status.unwrap().canary_weight, 0);
}

#[test]
fn while_a_promotion_waits_an_unready_canary_gets_no_traffic_and_the_deadline_applies() {
    let mut clock = Clock::start();
    let canary = waiting_promotion(&clock, 5).progress_deadline_secs(60);
    let world = observed()
        .target("rev-b", not_ready("0 of 2 replicas available"))
        .primary("rev-a", ready());
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(
        (plan.status.phase, plan.traffic),
        (WaitingPromotion, route(0))
    );
    clock.advance_secs(120);
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Failed);
    assert_eq!(plan.target, TargetScale::Down);
}

#[test]
fn an_approved_promotion_still_needs_the_canary_to_pass_its_checks_first() {
    let clock = Clock::start();
    let canary = waiting_promotion(&clock, 2);
    let world = rev_b_ready();
    let approved = Gates {
        promotion_approved: true,
        ..Gates::default()
    };
    let plan = plan_with(&canary, &world, approved, None, clock.now());
    assert_eq!(plan.status.phase, Promoting);
    assert_eq!(plan.primary, PrimaryAction::Promote);
}

// 5. One approval per traffic increase.

#[test]
fn one_traffic_increase_approval_lets_exactly_one_step_through() {
    let clock = Clock::start();
    let mut canary = analysing_rev_b(
        canary()
            .requires_traffic_increase_approval()
            .interval_secs(10),
        &clock,
        10,
        10,
    );
    let world = rev_b_ready();
    // serin.dev/approve-traffic-increase: rev-b@10
    let approved_at_10 = Gates {
        traffic_increase_approved_at: Some(10),
        ..Gates::default()
    };
    let plan = plan_with(
        &canary,
        &world,
        approved_at_10,
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(plan.status.canary_weight, 20);
    apply(&mut canary, &plan);
    let canary = canary.with_status(|s| s.last_analysed_at(clock.ago_secs(10)));
    let plan = plan_with(
        &canary,
        &world,
        approved_at_10,
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(plan.status.canary_weight, 20, "the same approval twice");
    assert!(
        plan.status
            .message
            .unwrap()
            .contains("serin.dev/approve-traffic-increase=rev-b@20")
    );
}

// 6. Suspend writes nothing.

#[test]
fn a_suspended_canary_plans_no_write_to_services_routes_or_workloads() {
    let clock = Clock::start();
    for phase in [
        Initializing,
        Initialized,
        Progressing,
        WaitingPromotion,
        Promoting,
        Failed,
    ] {
        let canary =
            analysing_rev_b(canary().suspended(), &clock, 20, 600).with_status(|s| s.phase(phase));
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
        assert_eq!(plan.traffic, Traffic::Untouched, "in {phase}");
        assert_eq!(plan.primary, PrimaryAction::Keep, "in {phase}");
        assert_eq!(plan.target, TargetScale::Keep, "in {phase}");
    }
}

// 9. A new revision during Promoting.

fn promoting(clock: &Clock) -> Canary {
    analysing_rev_b(canary().step_weight_promotion(10), clock, 40, 60)
        .with_status(|s| s.phase(Promoting))
}

#[test]
fn a_new_revision_after_the_primary_took_the_analysed_one_finishes_that_promotion_first() {
    let clock = Clock::start();
    let mut canary = promoting(&clock);
    // The primary already runs rev-b; then Flux applies rev-c to the target.
    let world = observed()
        .target("rev-c", ready())
        .primary("rev-b", ready());
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Finalising);
    assert_eq!(plan.primary, PrimaryAction::Keep, "rev-c is never copied");
    assert_eq!(plan.traffic, route(0), "rev-c's pods get no traffic");
    apply(&mut canary, &plan);

    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Succeeded);
    assert_eq!(plan.status.last_promoted_spec.as_deref(), Some("rev-b"));
    apply(&mut canary, &plan);

    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Progressing);
    assert_eq!(plan.status.last_applied_spec.as_deref(), Some("rev-c"));
}

#[test]
fn a_new_revision_before_the_primary_took_the_analysed_one_restarts_the_analysis() {
    let clock = Clock::start();
    let canary = promoting(&clock);
    let world = observed()
        .target("rev-c", ready())
        .primary("rev-a", ready());
    let plan = plan_at(&canary, &world, clock.now());
    assert_eq!(plan.status.phase, Progressing);
    assert_eq!(plan.status.canary_weight, 0);
    assert_eq!(plan.status.last_promoted_spec.as_deref(), Some("rev-a"));
    assert_eq!(plan.primary, PrimaryAction::Keep);
}

// 11. A transition planned twice is the same transition.

#[test]
fn a_step_planned_twice_from_the_same_state_has_the_same_idempotency_key() {
    let clock = Clock::start();
    let canary = analysing_rev_b(canary().interval_secs(10), &clock, 10, 10);
    let world = rev_b_ready();
    let first = plan_with(
        &canary,
        &world,
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    let again = plan_with(
        &canary,
        &world,
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    let advanced = |p: &crate::rollout::plan::Plan| {
        p.events
            .iter()
            .find(|e| e.reason == reasons::ADVANCED)
            .cloned()
            .expect("an Advanced event")
    };
    assert_eq!(advanced(&first).key, advanced(&again).key);
    assert_eq!(advanced(&first).revision.as_deref(), Some("rev-b"));
    assert_eq!(advanced(&first).weight, 20);

    // The next step is a different transition.
    let mut next = canary.clone();
    apply(&mut next, &first);
    let next = next.with_status(|s| s.last_analysed_at(clock.ago_secs(10)));
    let second = plan_with(
        &next,
        &world,
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_ne!(advanced(&first).key, advanced(&second).key);
}

#[test]
fn a_rollback_event_names_the_failing_metric_and_its_value() {
    let clock = Clock::start();
    let canary = analysing_rev_b(canary().threshold(1), &clock, 30, 60);
    let world = rev_b_ready();
    let finding = crate::rollout::verdict::Finding {
        metric: Some("request-success-rate".into()),
        value: Some(80.0),
        message: "request-success-rate 80.00 is below the minimum 99".into(),
    };
    let plan = plan_with(
        &canary,
        &world,
        Gates::default(),
        Some(Verdict::Fail(finding)),
        clock.now(),
    );
    let e = plan
        .events
        .iter()
        .find(|e| e.reason == reasons::ROLLED_BACK)
        .expect("a RolledBack event");
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(e.metric.as_deref(), Some("request-success-rate"));
    assert_eq!(e.value, Some(80.0));
    assert_eq!(e.revision.as_deref(), Some("rev-b"));
}
