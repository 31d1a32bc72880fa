//! Conformance tests at each traffic step and after promotion (`when: [each-step]`,
//! `when: [after-promotion]`): which Jobs a reconcile reads (`needs`), and what their
//! state does to the plan. Plain values, fake clock.

use crate::api::{CanaryPhase::*, ConformanceWhen};
use crate::rollout::conditions::reasons;
use crate::rollout::fixtures::{
    Clock, analysing_rev_b, canary, observed, plan_with, ready, rev_b_ready,
};
use crate::rollout::plan::{
    Conformance, ConformanceRun, Finding, Gates, Observed, TargetScale, Verdict, needs,
};

fn with(conformance: Conformance) -> Observed {
    let mut o = rev_b_ready();
    o.conformance = conformance;
    o
}

fn failed(name: &str) -> Conformance {
    Conformance::Failed(Finding::gate(
        name,
        format!("conformance test {name} failed: container {name} exited with code 1: 503"),
    ))
}

fn stepping(clock: &Clock) -> crate::api::Canary {
    analysing_rev_b(
        canary()
            .step_weight(10)
            .max_weight(30)
            .interval_secs(10)
            .conformance_test_at("load", &[ConformanceWhen::EachStep]),
        clock,
        10,
        10,
    )
}

#[test]
fn each_step_tests_are_read_at_the_weight_the_canary_has() {
    let clock = Clock::start();
    let c = stepping(&clock);
    assert_eq!(
        needs(&c, &rev_b_ready(), clock.now()).conformance,
        Some(ConformanceRun::Step(10))
    );
    let before_traffic_only = analysing_rev_b(canary().conformance_test("smoke"), &clock, 10, 10);
    assert_eq!(
        needs(&before_traffic_only, &rev_b_ready(), clock.now()).conformance,
        None,
        "a test that runs before traffic is not run again at each step"
    );
}

#[test]
fn the_next_step_waits_for_the_tests_of_this_step_and_takes_it_once_they_passed() {
    let clock = Clock::start();
    let c = stepping(&clock);
    let running = plan_with(
        &c,
        &with(Conformance::Running),
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(running.status.phase, Progressing);
    assert_eq!(running.status.canary_weight, 10, "holds");
    assert_eq!(
        running.status.failed_checks, 0,
        "a running test is no failure"
    );
    assert!(
        running
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("waiting for the conformance tests of this step")
    );

    let passed = plan_with(
        &c,
        &with(Conformance::Passed),
        Gates::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(passed.status.canary_weight, 20);
}

#[test]
fn a_failed_step_test_rolls_back_at_once_without_waiting_for_the_tick() {
    let clock = Clock::start();
    let c = stepping(&clock);
    let plan = plan_with(
        &c,
        &with(failed("load")),
        Gates::default(),
        None,
        clock.now(),
    );
    assert_eq!(plan.status.phase, Failed);
    assert_eq!(plan.status.canary_weight, 0);
    assert!(
        plan.status
            .message
            .as_deref()
            .unwrap()
            .contains("conformance test load failed")
    );
}

fn finalising() -> crate::api::Canary {
    canary()
        .conformance_test_at("smoke-primary", &[ConformanceWhen::AfterPromotion])
        .with_status(|s| s.phase(Finalising).promoted("rev-a").applied("rev-b"))
}

fn promoted_world(conformance: Conformance) -> Observed {
    let mut o = observed()
        .target("rev-b", ready())
        .primary("rev-b", ready());
    o.conformance = conformance;
    o
}

#[test]
fn after_promotion_tests_run_against_the_primary_before_the_release_succeeds() {
    let clock = Clock::start();
    let c = finalising();
    assert_eq!(
        needs(&c, &promoted_world(Conformance::NotRead), clock.now()).conformance,
        Some(ConformanceRun::AfterPromotion)
    );
    let running = plan_with(
        &c,
        &promoted_world(Conformance::Running),
        Gates::default(),
        None,
        clock.now(),
    );
    assert_eq!(running.status.phase, Finalising);
    assert_eq!(running.status.canary_weight, 0, "users are on the primary");
    assert_eq!(running.target, TargetScale::Down);

    let passed = plan_with(
        &c,
        &promoted_world(Conformance::Passed),
        Gates::default(),
        None,
        clock.now(),
    );
    assert_eq!(passed.status.phase, Succeeded);
    assert_eq!(passed.status.last_promoted_spec.as_deref(), Some("rev-b"));
    assert!(
        passed.status.history[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("after-promotion conformance tests passed")
    );
}

#[test]
fn a_failed_after_promotion_test_is_reported_as_an_error_but_cannot_roll_back() {
    let clock = Clock::start();
    let plan = plan_with(
        &finalising(),
        &promoted_world(failed("smoke-primary")),
        Gates::default(),
        None,
        clock.now(),
    );
    assert_eq!(plan.status.phase, Succeeded);
    let message = plan.status.message.as_deref().unwrap();
    assert!(
        message.contains("after promotion conformance test smoke-primary failed"),
        "{message}"
    );
    let event = plan
        .events
        .iter()
        .find(|e| e.reason == reasons::CHECK_FAILED)
        .expect("an event");
    assert_eq!(event.severity, crate::rollout::plan::Severity::Error);
    assert_eq!(event.revision.as_deref(), Some("rev-b"));
    assert!(
        plan.status.history[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("smoke-primary failed")
    );
}
