//! Gates in the state machine: which webhooks the controller must call in each situation
//! and when it must read the conformance-test Jobs (`needs`), and what their answers do
//! to the plan. Plain values, fake clock.

use crate::api::{CanaryPhase::*, WebhookType};
use crate::rollout::conditions::reasons;
use crate::rollout::fixtures::{Clock, canary, observed, plan_webhooks, ready};
use crate::rollout::plan::{
    Conformance, ConformanceRun, Finding, Observed, TargetScale, Traffic, Verdict, WebhookNeeds,
    Webhooks, needs,
};

fn serving(revision: &str) -> Observed {
    observed()
        .target(revision, ready())
        .primary("rev-a", ready())
}

fn closed(name: &str, code: u16) -> Option<Result<(), Finding>> {
    Some(Err(Finding::gate(
        name,
        format!("webhook {name} answered {code}"),
    )))
}

fn open() -> Option<Result<(), Finding>> {
    Some(Ok(()))
}

#[test]
fn nothing_is_called_for_a_canary_without_webhooks() {
    let clock = Clock::start();
    let c = canary().with_status(|s| s.phase(Succeeded).settled_on("rev-a"));
    assert_eq!(
        needs(&c, &serving("rev-b"), clock.now()).webhooks,
        WebhookNeeds::default()
    );
}

#[test]
fn a_new_revision_calls_the_confirm_rollout_webhooks_before_it_starts() {
    let clock = Clock::start();
    let c = canary()
        .webhook(WebhookType::ConfirmRollout)
        .with_status(|s| s.phase(Succeeded).settled_on("rev-a"));
    let n = needs(&c, &serving("rev-b"), clock.now()).webhooks;
    assert!(n.confirm_rollout && !n.pre_rollout && !n.rollback);
    assert!(
        !needs(&c, &serving("rev-a"), clock.now())
            .webhooks
            .confirm_rollout
    );
}

#[test]
fn a_closed_confirm_rollout_gate_holds_the_revision_in_waiting_with_the_reason() {
    let clock = Clock::start();
    let c = canary()
        .webhook(WebhookType::ConfirmRollout)
        .with_status(|s| s.phase(Succeeded).settled_on("rev-a"));
    let hooks = Webhooks {
        confirm_rollout: closed("confirm-rollout", 403),
        ..Default::default()
    };
    let plan = plan_webhooks(&c, &serving("rev-b"), hooks, None, clock.now());
    assert_eq!(plan.status.phase, Waiting);
    assert_ne!(plan.target, TargetScale::Up);
    assert!(
        plan.status
            .message
            .as_deref()
            .unwrap()
            .contains("answered 403"),
        "{:?}",
        plan.status.message
    );
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == reasons::WAITING_APPROVAL)
    );
}

#[test]
fn a_waiting_revision_asks_its_gate_again_each_interval_and_starts_when_it_opens() {
    let mut clock = Clock::start();
    let c = canary()
        .interval_secs(10)
        .webhook(WebhookType::ConfirmRollout)
        .webhook(WebhookType::Rollback)
        .with_status(|s| {
            s.phase(Waiting)
                .promoted("rev-a")
                .applied("rev-b")
                .last_analysed_at(clock.now())
        });
    let o = serving("rev-b");
    clock.advance_secs(3);
    let early = needs(&c, &o, clock.now()).webhooks;
    assert!(!early.confirm_rollout && !early.rollback);
    // Not asked this tick: the gate stays closed.
    let plan = plan_webhooks(&c, &o, Webhooks::default(), None, clock.now());
    assert_eq!(plan.status.phase, Waiting);

    clock.advance_secs(8);
    let due = needs(&c, &o, clock.now()).webhooks;
    assert!(due.confirm_rollout && due.rollback);
    let still = plan_webhooks(
        &c,
        &o,
        Webhooks {
            confirm_rollout: closed("confirm-rollout", 403),
            ..Default::default()
        },
        None,
        clock.now(),
    );
    assert_eq!(still.status.phase, Waiting);
    assert_eq!(
        still.status.last_analysis_time.as_ref().map(|t| t.0),
        Some(clock.now())
    );
    let opened = plan_webhooks(
        &c,
        &o,
        Webhooks {
            confirm_rollout: open(),
            ..Default::default()
        },
        None,
        clock.now(),
    );
    assert_eq!(opened.status.phase, Progressing);
    assert_eq!(opened.target, TargetScale::Up);
    assert_eq!(opened.status.last_analysis_time, None);
}

#[test]
fn a_manual_start_approval_and_the_confirm_rollout_webhooks_must_both_open() {
    let clock = Clock::start();
    let c = canary()
        .requires_start_approval()
        .webhook(WebhookType::ConfirmRollout)
        .with_status(|s| s.phase(Waiting).promoted("rev-a").applied("rev-b"));
    let hooks = Webhooks {
        confirm_rollout: open(),
        ..Default::default()
    };
    let plan = plan_webhooks(&c, &serving("rev-b"), hooks, None, clock.now());
    assert_eq!(plan.status.phase, Waiting, "no manual approval yet");
}

fn at_weight_zero(clock: &Clock) -> crate::api::Canary {
    canary()
        .interval_secs(10)
        .threshold(2)
        .webhook(WebhookType::PreRollout)
        .webhook(WebhookType::ConfirmTrafficIncrease)
        .with_status(|s| {
            s.phase(Progressing)
                .promoted("rev-a")
                .applied("rev-b")
                .analysis_started_at(clock.ago_secs(1))
        })
}

#[test]
fn the_pre_rollout_and_traffic_increase_webhooks_run_before_the_first_traffic() {
    let clock = Clock::start();
    let c = at_weight_zero(&clock);
    let n = needs(&c, &serving("rev-b"), clock.now()).webhooks;
    assert!(n.pre_rollout && n.confirm_traffic_increase);
    // A canary that is not ready yet is not tested.
    let unready = observed()
        .target("rev-b", crate::rollout::fixtures::not_ready("starting"))
        .primary("rev-a", ready());
    assert!(!needs(&c, &unready, clock.now()).webhooks.pre_rollout);

    let plan = plan_webhooks(
        &c,
        &serving("rev-b"),
        Webhooks {
            pre_rollout: open(),
            confirm_traffic_increase: open(),
            ..Default::default()
        },
        None,
        clock.now(),
    );
    assert_eq!(plan.status.canary_weight, 10);
    assert_eq!(plan.traffic, Traffic::Route { canary_weight: 10 });
}

#[test]
fn a_failed_pre_rollout_webhook_is_a_failed_check_and_no_traffic_reaches_the_canary() {
    let mut clock = Clock::start();
    let c = at_weight_zero(&clock);
    let failing = || Webhooks {
        pre_rollout: closed("acceptance-test", 500),
        confirm_traffic_increase: open(),
        ..Default::default()
    };
    let first = plan_webhooks(&c, &serving("rev-b"), failing(), None, clock.now());
    assert_eq!(first.status.phase, Progressing);
    assert_eq!(first.status.failed_checks, 1);
    assert_eq!(first.traffic, Traffic::Route { canary_weight: 0 });
    let e = first
        .events
        .iter()
        .find(|e| e.reason == reasons::CHECK_FAILED)
        .unwrap();
    assert_eq!(e.metric.as_deref(), Some("acceptance-test"));

    // Asked again only after an interval; the threshold (2) then rolls back.
    let mut c = c;
    c.status = Some(first.status.clone());
    clock.advance_secs(4);
    assert!(
        !needs(&c, &serving("rev-b"), clock.now())
            .webhooks
            .pre_rollout
    );
    clock.advance_secs(7);
    assert!(
        needs(&c, &serving("rev-b"), clock.now())
            .webhooks
            .pre_rollout
    );
    let second = plan_webhooks(&c, &serving("rev-b"), failing(), None, clock.now());
    assert_eq!(second.status.phase, Failed);
    assert!(
        second
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("acceptance-test answered 500")
    );
    assert_eq!(second.post_rollout, Some(Failed));
}

#[test]
fn a_closed_traffic_increase_gate_holds_the_weight() {
    let clock = Clock::start();
    let c = canary()
        .interval_secs(10)
        .webhook(WebhookType::ConfirmTrafficIncrease)
        .with_status(|s| {
            s.phase(Progressing)
                .promoted("rev-a")
                .applied("rev-b")
                .weight(10)
                .analysis_started_at(clock.ago_secs(30))
                .last_analysed_at(clock.ago_secs(11))
        });
    let n = needs(&c, &serving("rev-b"), clock.now());
    assert!(n.analysis && n.webhooks.confirm_traffic_increase && !n.webhooks.confirm_promotion);
    let held = plan_webhooks(
        &c,
        &serving("rev-b"),
        Webhooks {
            confirm_traffic_increase: closed("confirm-traffic-increase", 403),
            ..Default::default()
        },
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(held.status.canary_weight, 10);
    assert!(held.status.message.as_deref().unwrap().contains("403"));
    let stepped = plan_webhooks(
        &c,
        &serving("rev-b"),
        Webhooks {
            confirm_traffic_increase: open(),
            ..Default::default()
        },
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(stepped.status.canary_weight, 20);
}

#[test]
fn a_closed_promotion_gate_waits_in_waiting_promotion_and_promotes_when_it_opens() {
    let clock = Clock::start();
    let c = canary()
        .interval_secs(10)
        .max_weight(50)
        .webhook(WebhookType::ConfirmPromotion)
        .with_status(|s| {
            s.phase(Progressing)
                .promoted("rev-a")
                .applied("rev-b")
                .weight(50)
                .analysis_started_at(clock.ago_secs(60))
                .last_analysed_at(clock.ago_secs(11))
        });
    let o = serving("rev-b");
    assert!(needs(&c, &o, clock.now()).webhooks.confirm_promotion);
    let waiting = plan_webhooks(
        &c,
        &o,
        Webhooks {
            confirm_promotion: closed("confirm-promotion", 403),
            ..Default::default()
        },
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(waiting.status.phase, WaitingPromotion);
    assert_eq!(waiting.status.canary_weight, 50);
    let mut c = c;
    c.status = Some(waiting.status.clone());
    let later = clock
        .now()
        .checked_add(std::time::Duration::from_secs(11))
        .unwrap();
    assert!(needs(&c, &o, later).webhooks.confirm_promotion);
    let promoted = plan_webhooks(
        &c,
        &o,
        Webhooks {
            confirm_promotion: open(),
            ..Default::default()
        },
        Some(Verdict::Pass),
        later,
    );
    assert_eq!(promoted.status.phase, Promoting);
}

#[test]
fn a_rollback_webhook_answering_2xx_rolls_back_at_once() {
    let clock = Clock::start();
    for phase in [Progressing, WaitingPromotion] {
        let c = canary().webhook(WebhookType::Rollback).with_status(|s| {
            s.phase(phase)
                .promoted("rev-a")
                .applied("rev-b")
                .weight(30)
                .analysis_started_at(clock.ago_secs(100))
                .last_analysed_at(clock.ago_secs(61))
        });
        assert!(needs(&c, &serving("rev-b"), clock.now()).webhooks.rollback);
        let plan = plan_webhooks(
            &c,
            &serving("rev-b"),
            Webhooks {
                rollback: Some(Finding::gate(
                    "rollback",
                    "rollback requested by webhook rollback".into(),
                )),
                ..Default::default()
            },
            Some(Verdict::Pass),
            clock.now(),
        );
        assert_eq!(plan.status.phase, Failed, "{phase:?}");
        assert_eq!(plan.status.canary_weight, 0);
        assert_eq!(plan.post_rollout, Some(Failed));
    }
}

#[test]
fn a_finished_promotion_calls_the_post_rollout_webhooks_once() {
    let clock = Clock::start();
    let c = canary().with_status(|s| s.phase(Finalising).settled_on("rev-b"));
    let plan = plan_webhooks(
        &c,
        &observed()
            .target("rev-b", ready())
            .primary("rev-b", ready()),
        Webhooks::default(),
        None,
        clock.now(),
    );
    assert_eq!(plan.status.phase, Succeeded);
    assert_eq!(plan.post_rollout, Some(Succeeded));
    let mut settled = c.clone();
    settled.status = Some(plan.status);
    let again = plan_webhooks(
        &settled,
        &observed()
            .target("rev-b", ready())
            .primary("rev-b", ready()),
        Webhooks::default(),
        None,
        clock.now(),
    );
    assert_eq!(again.post_rollout, None);
}

fn testing(clock: &Clock) -> crate::api::Canary {
    canary().conformance_test("smoke").with_status(|s| {
        s.phase(Progressing)
            .promoted("rev-a")
            .applied("rev-b")
            .analysis_started_at(clock.ago_secs(1))
    })
}

#[test]
fn the_conformance_jobs_are_read_while_the_ready_canary_has_no_traffic() {
    let clock = Clock::start();
    let c = testing(&clock);
    assert_eq!(
        needs(&c, &serving("rev-b"), clock.now()).conformance,
        Some(ConformanceRun::BeforeTraffic)
    );
    let unready = observed()
        .target("rev-b", crate::rollout::fixtures::not_ready("starting"))
        .primary("rev-a", ready());
    assert_eq!(needs(&c, &unready, clock.now()).conformance, None);
    let stepped = c.clone().with_status(|s| s.weight(10));
    assert_eq!(
        needs(&stepped, &serving("rev-b"), clock.now()).conformance,
        None
    );
    assert_eq!(
        needs(
            &canary().with_status(|s| s.phase(Progressing).applied("rev-b")),
            &serving("rev-b"),
            clock.now()
        )
        .conformance,
        None
    );
}

#[test]
fn traffic_waits_for_the_conformance_tests_and_a_failed_one_rolls_back_quoting_it() {
    let clock = Clock::start();
    let c = testing(&clock);
    let with = |conformance: Conformance| {
        let mut o = serving("rev-b");
        o.conformance = conformance;
        plan_webhooks(&c, &o, Webhooks::default(), None, clock.now())
    };
    let running = with(Conformance::Running);
    assert_eq!(running.status.phase, Progressing);
    assert_eq!(running.traffic, Traffic::Route { canary_weight: 0 });
    assert!(
        running
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("conformance tests")
    );

    let passed = with(Conformance::Passed);
    assert_eq!(passed.status.canary_weight, 10);

    let failed = with(Conformance::Failed(Finding::gate(
        "smoke",
        "conformance test smoke failed: container smoke exited with code 1: GET /healthz: 503"
            .into(),
    )));
    assert_eq!(failed.status.phase, Failed);
    assert_eq!(failed.traffic, Traffic::Route { canary_weight: 0 });
    assert!(
        failed
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("GET /healthz: 503")
    );
    let e = failed
        .events
        .iter()
        .find(|e| e.reason == reasons::ROLLED_BACK)
        .unwrap();
    assert!(e.message.contains("GET /healthz: 503"));
}

#[test]
fn every_finished_release_is_kept_in_a_bounded_history_newest_first() {
    let clock = Clock::start();
    let mut o = observed()
        .target("rev-b", ready())
        .primary("rev-b", ready());
    o.images = vec!["podinfo:6.0.1".into()];
    let finalising = canary().with_status(|s| s.phase(Finalising).settled_on("rev-b"));
    let promoted = plan_webhooks(&finalising, &o, Webhooks::default(), None, clock.now());
    let first = &promoted.status.history[0];
    assert_eq!(first.revision, "rev-b");
    assert_eq!(first.outcome, Succeeded);
    assert_eq!(first.images, vec!["podinfo:6.0.1".to_string()]);

    let mut c = testing(&clock);
    c.status.as_mut().unwrap().history = vec![first.clone(); 10];
    let mut failing = serving("rev-b");
    failing.conformance = Conformance::Failed(Finding::gate("smoke", "smoke failed".into()));
    let rolled_back = plan_webhooks(&c, &failing, Webhooks::default(), None, clock.now());
    let history = &rolled_back.status.history;
    assert_eq!(history.len(), 10, "bounded");
    assert_eq!(history[0].outcome, Failed);
    assert_eq!(history[0].reason.as_deref(), Some("smoke failed"));
}

#[test]
fn a_gate_closed_by_a_webhook_with_mute_alert_is_an_event_but_not_a_notification() {
    let clock = Clock::start();
    let waiting_for = |mute: bool| {
        let mut c = canary()
            .interval_secs(10)
            .max_weight(50)
            .webhook(WebhookType::ConfirmPromotion)
            .with_status(|s| {
                s.phase(Progressing)
                    .promoted("rev-a")
                    .applied("rev-b")
                    .weight(50)
                    .analysis_started_at(clock.ago_secs(60))
                    .last_analysed_at(clock.ago_secs(11))
            });
        c.spec.analysis.webhooks[0].mute_alert = mute;
        let plan = plan_webhooks(
            &c,
            &serving("rev-b"),
            Webhooks {
                confirm_promotion: closed("confirm-promotion", 403),
                ..Default::default()
            },
            Some(Verdict::Pass),
            clock.now(),
        );
        let event = plan
            .events
            .iter()
            .find(|e| e.reason == reasons::WAITING_APPROVAL)
            .cloned()
            .expect("the wait is an event either way");
        (c, event)
    };
    let (c, loud) = waiting_for(false);
    assert!(!loud.muted);
    assert!(!crate::notify::targets(&c, &loud, Some(crate::api::AlertSeverity::Info)).is_empty());
    let (c, muted) = waiting_for(true);
    assert!(muted.muted);
    assert!(crate::notify::targets(&c, &muted, Some(crate::api::AlertSeverity::Info)).is_empty());
}

/// A blue/green Canary (`provider: kubernetes`, 2 iterations) with pre-rollout and
/// confirm-promotion webhooks, that has just detected `rev-b`.
fn blue_green_with_gates(clock: &Clock) -> crate::api::Canary {
    let mut c = canary()
        .interval_secs(10)
        .threshold(2)
        .webhook(WebhookType::PreRollout)
        .webhook(WebhookType::ConfirmPromotion)
        .with_status(|s| {
            s.phase(Progressing)
                .promoted("rev-a")
                .applied("rev-b")
                .analysis_started_at(clock.ago_secs(1))
        });
    c.spec.provider = Some(crate::api::Provider::Kubernetes);
    c.spec.analysis.step_weight = None;
    c.spec.analysis.iterations = Some(2);
    c
}

#[test]
fn blue_green_iterations_start_only_after_the_pre_rollout_webhooks_pass() {
    let mut clock = Clock::start();
    let c = blue_green_with_gates(&clock);
    let o = serving("rev-b");
    let n = needs(&c, &o, clock.now()).webhooks;
    assert!(n.pre_rollout, "asked before the iterations start");
    assert!(
        !n.confirm_traffic_increase,
        "blue/green increases no traffic"
    );

    let failing = || Webhooks {
        pre_rollout: closed("acceptance-test", 500),
        ..Default::default()
    };
    let first = plan_webhooks(&c, &o, failing(), None, clock.now());
    assert_eq!(first.status.failed_checks, 1);
    assert!(
        first.status.last_analysis_time.is_none(),
        "no iteration started"
    );
    let mut c = c;
    c.status = Some(first.status.clone());
    clock.advance_secs(4);
    assert!(
        !needs(&c, &o, clock.now()).webhooks.pre_rollout,
        "a failure is retried an interval later, not at every reconcile"
    );
    clock.advance_secs(7);
    assert!(needs(&c, &o, clock.now()).webhooks.pre_rollout);
    let passed = plan_webhooks(
        &c,
        &o,
        Webhooks {
            pre_rollout: open(),
            ..Default::default()
        },
        None,
        clock.now(),
    );
    assert_eq!(passed.status.phase, Progressing);
    assert!(
        passed.status.last_analysis_time.is_some(),
        "iterations start"
    );
    c.status = Some(passed.status.clone());
    clock.advance_secs(11);
    assert!(
        !needs(&c, &o, clock.now()).webhooks.pre_rollout,
        "pre-rollout runs once, not at every iteration"
    );

    // The threshold rolls back a blue/green release whose acceptance test keeps failing.
    let mut failing_twice = blue_green_with_gates(&clock);
    let once = plan_webhooks(&failing_twice, &o, failing(), None, clock.now());
    failing_twice.status = Some(once.status.clone());
    let later = clock.advance_secs(11);
    let twice = plan_webhooks(&failing_twice, &o, failing(), None, later);
    assert_eq!(twice.status.phase, Failed);
}

#[test]
fn blue_green_asks_the_confirm_promotion_webhooks_in_its_last_iteration_and_waits_for_them() {
    let mut clock = Clock::start();
    let mut c = blue_green_with_gates(&clock);
    let o = serving("rev-b");
    let started = plan_webhooks(
        &c,
        &o,
        Webhooks {
            pre_rollout: open(),
            ..Default::default()
        },
        None,
        clock.now(),
    );
    c.status = Some(started.status.clone());
    clock.advance_secs(11);
    assert!(
        !needs(&c, &o, clock.now()).webhooks.confirm_promotion,
        "not in the first of two iterations"
    );
    let first = plan_webhooks(
        &c,
        &o,
        Webhooks::default(),
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(first.status.iterations, 1);
    c.status = Some(first.status.clone());
    clock.advance_secs(11);
    assert!(needs(&c, &o, clock.now()).webhooks.confirm_promotion);
    let held = plan_webhooks(
        &c,
        &o,
        Webhooks {
            confirm_promotion: closed("confirm-promotion", 403),
            ..Default::default()
        },
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(held.status.phase, WaitingPromotion);
    assert_eq!(held.status.canary_weight, 0, "users stay on the primary");
    c.status = Some(held.status.clone());
    clock.advance_secs(11);
    assert!(needs(&c, &o, clock.now()).webhooks.confirm_promotion);
    let switched = plan_webhooks(
        &c,
        &o,
        Webhooks {
            confirm_promotion: open(),
            ..Default::default()
        },
        Some(Verdict::Pass),
        clock.now(),
    );
    assert_eq!(
        switched.status.canary_weight, 100,
        "the switch to the canary"
    );
}
