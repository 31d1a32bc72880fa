//! A/B testing, as plain values: `iterations` with `match` routes the matching requests
//! to the canary (the matching route's weight 100) for `iterations` rounds while
//! everyone else stays on the primary, then promotes the canary as Flagger does.

use crate::api::{Canary, CanaryPhase};
use crate::rollout::fixtures::{Clock, apply, canary, not_ready, observed, plan_with, ready};
use crate::rollout::plan::{
    Gates, Observed, Plan, PrimaryAction, Traffic, Verdict, analysis_due, is_ab_test, is_blue_green,
};

use CanaryPhase::*;

/// An Istio A/B test on the header `x-canary: insider`, 3 iterations, that has just
/// detected `rev-b` while the primary serves `rev-a`.
fn ab(clock: &Clock) -> Canary {
    let mut c = canary();
    c.spec.analysis.step_weight = None;
    c.spec.analysis.iterations = Some(3);
    c.spec.analysis.match_ =
        vec![serde_json::json!({"headers": {"x-canary": {"exact": "insider"}}})];
    c.with_status(|s| {
        s.phase(Progressing)
            .promoted("rev-a")
            .applied("rev-b")
            .weight(0)
            .analysis_started_at(clock.now())
    })
}

fn world(primary: &str) -> Observed {
    observed()
        .target("rev-b", ready())
        .primary(primary, ready())
}

fn step(canary: &mut Canary, clock: &mut Clock, world: &Observed, verdict: Verdict) -> Plan {
    let due = analysis_due(canary, clock.now());
    let plan = plan_with(
        canary,
        world,
        Gates::default(),
        due.then_some(verdict),
        clock.now(),
    );
    apply(canary, &plan);
    clock.advance_secs(canary.spec.analysis.interval().as_secs());
    plan
}

#[test]
fn iterations_with_match_are_an_ab_test_as_flagger_chooses() {
    let clock = Clock::start();
    let c = ab(&clock);
    assert!(is_ab_test(&c));
    assert!(!is_blue_green(&c));
    let mut weighted = c.clone();
    weighted.spec.analysis.step_weight = Some(10);
    assert!(!is_ab_test(&weighted), "weights make it a weighted canary");
    let mut no_match = c;
    no_match.spec.analysis.match_.clear();
    assert!(!is_ab_test(&no_match), "iterations alone are blue/green");
}

#[test]
fn the_matching_requests_reach_the_canary_for_the_iterations_then_it_is_promoted() {
    let mut clock = Clock::start();
    let mut c = ab(&clock);
    let first = step(&mut c, &mut clock, &world("rev-a"), Verdict::Pass);
    assert_eq!(first.status.phase, Progressing);
    assert_eq!(
        first.traffic,
        Traffic::Route { canary_weight: 100 },
        "the matching route sends everything to the canary at once"
    );
    assert_eq!(first.primary, PrimaryAction::Keep);
    let mut plans = Vec::new();
    for _ in 0..3 {
        plans.push(step(&mut c, &mut clock, &world("rev-a"), Verdict::Pass));
    }
    for p in &plans[..2] {
        assert_eq!(p.status.phase, Progressing);
        assert_eq!(p.traffic, Traffic::Route { canary_weight: 100 });
        assert!(
            p.status
                .message
                .as_deref()
                .unwrap()
                .starts_with("A/B testing rev-b")
        );
    }
    let promoting = &plans[2];
    assert_eq!(promoting.status.iterations, 3);
    assert_eq!(promoting.status.phase, Promoting);
    assert_eq!(promoting.primary, PrimaryAction::Promote);
    assert_eq!(
        promoting.traffic,
        Traffic::Route { canary_weight: 100 },
        "the matching requests stay on the canary while the primary is updated"
    );
    let p = step(&mut c, &mut clock, &world("rev-b"), Verdict::Pass);
    assert_eq!(p.status.phase, Finalising);
    assert_eq!(p.traffic, Traffic::Route { canary_weight: 0 });
    let p = step(&mut c, &mut clock, &world("rev-b"), Verdict::Pass);
    assert_eq!(p.status.phase, Succeeded);
}

#[test]
fn a_failing_ab_test_is_rolled_back_and_the_matching_requests_return_to_the_primary() {
    let mut clock = Clock::start();
    let mut c = ab(&clock);
    c.spec.analysis.threshold = Some(2);
    step(&mut c, &mut clock, &world("rev-a"), Verdict::Pass);
    let mut last = None;
    for _ in 0..2 {
        last = Some(step(
            &mut c,
            &mut clock,
            &world("rev-a"),
            Verdict::Fail("error rate 20%".into()),
        ));
    }
    let p = last.unwrap();
    assert_eq!(p.status.phase, Failed);
    assert_eq!(p.traffic, Traffic::Route { canary_weight: 0 });
    assert_eq!(p.primary, PrimaryAction::Keep);
}

#[test]
fn an_unready_canary_gets_no_matching_requests() {
    let mut clock = Clock::start();
    let mut c = ab(&clock);
    step(&mut c, &mut clock, &world("rev-a"), Verdict::Pass);
    let unready = observed()
        .target("rev-b", not_ready("0 of 1 ready"))
        .primary("rev-a", ready());
    let p = step(&mut c, &mut clock, &unready, Verdict::Pass);
    assert_eq!(p.traffic, Traffic::Route { canary_weight: 0 });
}
