//! Holding progress while the routes are not programmed: a Gateway API route takes
//! effect only once its parents (Gateways, or the mesh for a Service parent) have
//! accepted its current generation. Until they have, a plan that would send the canary
//! more traffic is held at the weight already routed, and the `RouteAccepted` condition
//! says which parent is missing and why. Plans that take traffic away from the canary
//! (a rollback, an unready canary, a promotion) are never held.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::CanaryStatus;
use crate::rollout::conditions::{self, ROUTE_ACCEPTED, reasons};
use crate::rollout::plan::{Plan, Traffic};

/// `plan`, held at the weight of `before` when it would raise the canary's weight while
/// the route is not accepted (`not_accepted` says why); the `RouteAccepted` condition
/// is set either way.
pub fn hold_until_accepted(
    before: Option<&CanaryStatus>,
    mut plan: Plan,
    not_accepted: Option<&str>,
    now: Timestamp,
    generation: Option<i64>,
) -> Plan {
    let Some(why) = not_accepted else {
        conditions::set(
            &mut plan.status.conditions,
            ROUTE_ACCEPTED,
            true,
            reasons::ACCEPTED,
            "every parent accepted the route",
            now,
            generation,
        );
        return plan;
    };
    let held_weight = before.map(|s| s.canary_weight).unwrap_or(0);
    if plan.status.canary_weight > held_weight
        && let Some(before) = before
    {
        plan.status = before.clone();
        plan.status.message = Some(format!(
            "holding at weight {held_weight} until the route is accepted: {why}"
        ));
        conditions::set_for_phase(&mut plan.status, now, generation);
        plan.events.clear();
        if let Traffic::Route { canary_weight } = plan.traffic {
            plan.traffic = Traffic::Route {
                canary_weight: canary_weight.min(u32::try_from(held_weight).unwrap_or(0)),
            };
        }
    }
    // Look again soon: the parent's answer is in the route's status, which is not watched.
    plan.requeue = plan.requeue.min(Duration::from_secs(1));
    conditions::set(
        &mut plan.status.conditions,
        ROUTE_ACCEPTED,
        false,
        reasons::ROUTE_NOT_ACCEPTED,
        why,
        now,
        generation,
    );
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CanaryPhase;
    use crate::rollout::plan::{PrimaryAction, TargetScale};

    fn status(phase: CanaryPhase, weight: i32) -> CanaryStatus {
        CanaryStatus {
            phase,
            canary_weight: weight,
            ..Default::default()
        }
    }

    fn plan(status: CanaryStatus, routed: u32) -> Plan {
        Plan {
            status,
            primary: PrimaryAction::Keep,
            target: TargetScale::Up,
            traffic: Traffic::Route {
                canary_weight: routed,
            },
            mirror: None,
            events: Vec::new(),
            post_rollout: None,
            requeue: Duration::from_secs(10),
        }
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn condition(plan: &Plan) -> (String, String) {
        let c = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == ROUTE_ACCEPTED)
            .unwrap();
        (c.status.clone(), c.message.clone())
    }

    #[test]
    fn a_step_up_waits_until_the_route_is_accepted_and_says_why() {
        let before = status(CanaryPhase::Progressing, 10);
        let held = hold_until_accepted(
            Some(&before),
            plan(status(CanaryPhase::Progressing, 20), 20),
            Some("Gateway public has not accepted HTTPRoute podinfo yet"),
            now(),
            Some(1),
        );
        assert_eq!(held.status.canary_weight, 10);
        assert_eq!(held.traffic, Traffic::Route { canary_weight: 10 });
        assert!(held.requeue <= Duration::from_secs(1));
        assert_eq!(
            condition(&held),
            (
                "False".to_string(),
                "Gateway public has not accepted HTTPRoute podinfo yet".to_string()
            )
        );
        assert!(
            held.status
                .message
                .unwrap()
                .starts_with("holding at weight 10 until the route is accepted")
        );
    }

    #[test]
    fn taking_traffic_away_from_the_canary_is_never_held() {
        for (phase, weight, routed) in [
            (CanaryPhase::Failed, 0, 0),
            (CanaryPhase::Progressing, 20, 0),
            (CanaryPhase::Promoting, 0, 0),
        ] {
            let before = status(CanaryPhase::Progressing, 20);
            let planned = plan(status(phase, weight), routed);
            let out =
                hold_until_accepted(Some(&before), planned.clone(), Some("not yet"), now(), None);
            assert_eq!(out.status.phase, phase);
            assert_eq!(out.traffic, planned.traffic);
            assert_eq!(out.events, planned.events);
            assert_eq!(condition(&out).0, "False");
            assert!(out.requeue <= Duration::from_secs(1), "looks again soon");
        }
    }

    #[test]
    fn an_accepted_route_changes_nothing_but_the_condition() {
        let planned = plan(status(CanaryPhase::Progressing, 20), 20);
        let out = hold_until_accepted(
            Some(&status(CanaryPhase::Progressing, 10)),
            planned.clone(),
            None,
            now(),
            None,
        );
        assert_eq!(out.status.canary_weight, 20);
        assert_eq!(out.traffic, planned.traffic);
        assert_eq!(condition(&out).0, "True");
    }
}
