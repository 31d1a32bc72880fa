//! Mirroring, as plain values: blue/green with `analysis.mirror` copies `mirrorWeight`
//! percent of the primary's traffic to a ready canary during its iterations, before
//! any user is routed to it; the switch stops the mirror.

use crate::api::{Canary, CanaryPhase, Provider};
use crate::rollout::fixtures::{Clock, apply, canary, not_ready, observed, plan_with, ready};
use crate::rollout::plan::{Gates, Observed, Plan, Traffic, Verdict, analysis_due};

use CanaryPhase::*;

fn mirrored(clock: &Clock) -> Canary {
    let mut c = canary();
    c.spec.analysis.step_weight = None;
    c.spec.analysis.iterations = Some(2);
    c.spec.analysis.mirror = true;
    c.spec.analysis.mirror_weight = Some(50);
    c.with_status(|s| {
        s.phase(Progressing)
            .promoted("rev-a")
            .applied("rev-b")
            .weight(0)
            .analysis_started_at(clock.now())
    })
}

fn world() -> Observed {
    observed()
        .target("rev-b", ready())
        .primary("rev-a", ready())
}

fn step(canary: &mut Canary, clock: &mut Clock, world: &Observed) -> Plan {
    let due = analysis_due(canary, clock.now());
    let plan = plan_with(
        canary,
        world,
        Gates::default(),
        due.then_some(Verdict::Pass),
        clock.now(),
    );
    apply(canary, &plan);
    clock.advance_secs(canary.spec.analysis.interval().as_secs());
    plan
}

#[test]
fn the_mirror_runs_during_the_iterations_and_stops_at_the_switch() {
    let mut clock = Clock::start();
    let mut c = mirrored(&clock);
    let plans: Vec<Plan> = (0..4).map(|_| step(&mut c, &mut clock, &world())).collect();
    for p in &plans[..3] {
        if p.status.phase == Progressing {
            assert_eq!(p.traffic, Traffic::Route { canary_weight: 0 });
            assert_eq!(p.mirror, Some(50), "{:?}", p.status.message);
        }
    }
    let switch = plans
        .iter()
        .find(|p| p.status.phase == Promoting)
        .expect("promoted");
    assert_eq!(switch.traffic, Traffic::Route { canary_weight: 100 });
    assert_eq!(switch.mirror, None, "no mirror once users reach the canary");
}

#[test]
fn nothing_is_mirrored_to_an_unready_canary_or_without_a_mesh() {
    let mut clock = Clock::start();
    let mut c = mirrored(&clock);
    step(&mut c, &mut clock, &world());
    let unready = observed()
        .target("rev-b", not_ready("0 of 1 ready"))
        .primary("rev-a", ready());
    assert_eq!(step(&mut c, &mut clock, &unready).mirror, None);
    let mut k8s = mirrored(&clock);
    k8s.spec.provider = Some(Provider::Kubernetes);
    step(&mut k8s, &mut clock, &world());
    assert_eq!(step(&mut k8s, &mut clock, &world()).mirror, None);
    let mut weighted = canary();
    weighted.spec.analysis.mirror = true;
    assert_eq!(step(&mut weighted, &mut clock, &world()).mirror, None);
}
