//! Blue/green, as plain values: `iterations` rounds against the canary Service while
//! users stay on the primary, then the switch of all traffic to the canary while the
//! primary is updated behind it, then back to the promoted primary.

use crate::api::{Canary, CanaryPhase, Provider};
use crate::rollout::fixtures::{Clock, Rng, apply, canary, not_ready, observed, plan_with, ready};
use crate::rollout::plan::{
    Gates, Observed, Plan, PrimaryAction, TargetScale, Traffic, Verdict, analysis_due,
    is_blue_green,
};

use CanaryPhase::*;

/// A blue/green Canary (`provider: kubernetes`, 3 iterations) that has just detected
/// `rev-b` while the primary serves `rev-a`.
fn blue_green(clock: &Clock) -> Canary {
    let mut c = canary();
    c.spec.provider = Some(Provider::Kubernetes);
    c.spec.analysis.step_weight = None;
    c.spec.analysis.iterations = Some(3);
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
fn iterations_without_match_or_weights_are_blue_green_as_flagger_chooses() {
    let clock = Clock::start();
    assert!(is_blue_green(&blue_green(&clock)));
    let mut istio = blue_green(&clock);
    istio.spec.provider = None;
    assert!(is_blue_green(&istio), "iterations alone on Istio");
    istio.spec.analysis.match_ = vec![serde_json::json!({"headers": {"x-canary": {"exact": "1"}}})];
    assert!(!is_blue_green(&istio), "iterations with match is A/B");
    assert!(!is_blue_green(&canary()), "stepWeight is a weighted canary");
}

#[test]
fn blue_green_runs_its_iterations_with_users_on_the_primary_then_switches_and_promotes() {
    let mut clock = Clock::start();
    let mut c = blue_green(&clock);
    let mut plans = Vec::new();
    for _ in 0..5 {
        plans.push(step(&mut c, &mut clock, &world("rev-a"), Verdict::Pass));
    }
    // The first plan starts the rounds; three passing rounds follow.
    for p in &plans[..3] {
        assert_eq!(p.status.phase, Progressing);
        assert_eq!(
            p.traffic,
            Traffic::Route { canary_weight: 0 },
            "users stay on the primary"
        );
        assert_eq!(p.primary, PrimaryAction::Keep);
        assert_eq!(p.target, TargetScale::Up);
    }
    assert_eq!(plans[2].status.iterations, 2);
    let switch = &plans[3];
    assert_eq!(switch.status.iterations, 3);
    assert_eq!(switch.status.phase, Promoting);
    assert_eq!(switch.primary, PrimaryAction::Promote);
    assert_eq!(
        switch.traffic,
        Traffic::Route { canary_weight: 100 },
        "everything goes to the canary's pods while the primary is updated"
    );
    // The primary is being rolled: traffic stays on the canary until it is ready.
    let rolling = observed()
        .target("rev-b", ready())
        .primary("rev-b", not_ready("1 of 2 updated"));
    let p = step(&mut c, &mut clock, &rolling, Verdict::Pass);
    assert_eq!(p.traffic, Traffic::Route { canary_weight: 100 });
    assert_eq!(p.status.phase, Promoting);
    let p = step(&mut c, &mut clock, &world("rev-b"), Verdict::Pass);
    assert_eq!(p.status.phase, Finalising);
    assert_eq!(
        p.traffic,
        Traffic::Route { canary_weight: 0 },
        "back to the promoted primary"
    );
    let p = step(&mut c, &mut clock, &world("rev-b"), Verdict::Pass);
    assert_eq!(p.status.phase, Succeeded);
    assert_eq!(p.target, TargetScale::Down);
}

#[test]
fn a_failing_blue_green_is_rolled_back_without_touching_the_primary() {
    let mut clock = Clock::start();
    let mut c = blue_green(&clock);
    c.spec.analysis.threshold = Some(2);
    let mut last = None;
    for _ in 0..4 {
        let p = step(
            &mut c,
            &mut clock,
            &world("rev-a"),
            Verdict::Fail("error rate 20%".into()),
        );
        assert_eq!(
            p.primary,
            PrimaryAction::Keep,
            "the primary is never touched"
        );
        assert_eq!(p.traffic, Traffic::Route { canary_weight: 0 });
        last = Some(p);
    }
    let last = last.unwrap();
    assert_eq!(last.status.phase, Failed);
    assert_eq!(last.target, TargetScale::Down);
}

#[test]
fn blue_green_only_ever_routes_all_or_nothing_and_switches_only_to_promote() {
    for seed in 0..200 {
        let mut rng = Rng::seeded(seed);
        let mut clock = Clock::start();
        let mut c = blue_green(&clock);
        for _ in 0..20 {
            let verdict = match rng.below(4) {
                0 => Verdict::Fail("bad".into()),
                _ => Verdict::Pass,
            };
            let canary_ready = rng.below(5) != 0;
            let primary_rev = if rng.below(2) == 0 { "rev-a" } else { "rev-b" };
            let world = observed()
                .target(
                    "rev-b",
                    if canary_ready {
                        ready()
                    } else {
                        not_ready("starting")
                    },
                )
                .primary(primary_rev, ready());
            let before = c.status.clone().unwrap_or_default().phase;
            let p = step(&mut c, &mut clock, &world, verdict);
            if let Traffic::Route { canary_weight } = p.traffic {
                assert!(
                    canary_weight == 0 || canary_weight == 100,
                    "seed {seed}: {canary_weight}"
                );
                if canary_weight == 100 {
                    assert_eq!(
                        p.status.phase, Promoting,
                        "seed {seed}: switched outside a promotion"
                    );
                    assert!(canary_ready, "seed {seed}: switched to an unready canary");
                }
            }
            if p.primary == PrimaryAction::Promote {
                assert!(
                    matches!(before, Progressing | Promoting),
                    "seed {seed}: promoted from {before}"
                );
            }
            if p.status.phase == Succeeded || p.status.phase == Failed {
                break;
            }
        }
    }
}
