//! Blue/green without a mesh (`provider: kubernetes`), end to end: the checks run their
//! iterations against the canary Service (the simulator's load test) while users reach
//! the primary through the apex Service; then the apex Service switches to the canary's
//! pods while the primary is updated behind it, and back. On errors nothing switches and
//! the primary's pods are never restarted.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use serde_json::{Value, json};
use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::{eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(90);

fn blue_green_canary(threshold: u32) -> Value {
    let mut spec = canary_spec(threshold);
    spec["spec"]["provider"] = json!("kubernetes");
    let analysis = &mut spec["spec"]["analysis"];
    analysis.as_object_mut().unwrap().remove("stepWeight");
    analysis.as_object_mut().unwrap().remove("maxWeight");
    analysis["iterations"] = json!(3);
    spec
}

async fn apex_app(rollout: &Rollout) -> String {
    let api: Api<Service> = Api::namespaced(rollout.client.clone(), &rollout.ns);
    api.get("podinfo")
        .await
        .ok()
        .and_then(|s| s.spec?.selector?.get("app").cloned())
        .unwrap_or_default()
}

/// Waits (the rest of a reconcile) for the apex Service to select `app`.
async fn apex_selects(rollout: &Rollout, app: &str, why: &str) {
    eventually(why, Duration::from_secs(10), || async {
        match apex_app(rollout).await {
            selected if selected == app => Ok(()),
            selected => Err(selected),
        }
    })
    .await;
}

/// Polls the apex Service's selector and the phase until `until`, recording each
/// distinct (selected app, phase).
async fn record_switches(rollout: &Rollout, until: CanaryPhase) -> Vec<(String, CanaryPhase)> {
    let deadline = Instant::now() + SETTLE;
    let mut seen: Vec<(String, CanaryPhase)> = Vec::new();
    loop {
        let phase = rollout.canary().await.status.unwrap_or_default().phase;
        let app = apex_app(rollout).await;
        if seen.last() != Some(&(app.clone(), phase)) {
            seen.push((app, phase));
        }
        if phase == until {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {until}; seen {seen:?}\n{}",
            rollout.controller_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn initialized(rollout: &Rollout, threshold: u32) {
    rollout
        .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
        .await;
    rollout
        .apply("kustomize-controller", &blue_green_canary(threshold))
        .await;
    rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
    // The status is written first; the apex Service follows in the same reconcile.
    apex_selects(
        rollout,
        "podinfo-primary",
        "the apex Service selects the primary",
    )
    .await;
}

#[tokio::test]
async fn blue_green_switches_the_apex_service_only_after_the_checks_pass() {
    with_namespace("e2e-bg-promote", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        initialized(&rollout, 2).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        let seen = record_switches(&rollout, CanaryPhase::Succeeded).await;
        println!("apex selector and phase: {seen:?}");
        for (app, phase) in &seen {
            if app == "podinfo" {
                assert!(
                    matches!(phase, CanaryPhase::Promoting | CanaryPhase::Finalising),
                    "the apex selects the canary only once the checks passed: {seen:?}"
                );
            }
        }
        assert!(
            seen.iter().any(|(app, _)| app == "podinfo"),
            "users were switched to the canary's pods while the primary was updated: {seen:?}"
        );
        let status = rollout.canary().await.status.unwrap();
        assert_eq!(status.iterations, 3);
        apex_selects(
            &rollout,
            "podinfo-primary",
            "the apex Service selects the primary again",
        )
        .await;
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
        rollout
            .await_replicas("podinfo", 0, "the canary is scaled to 0")
            .await;
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn blue_green_with_errors_rolls_back_and_never_restarts_the_primarys_pods() {
    with_namespace("e2e-bg-rollback", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        initialized(&rollout, 2).await;
        let names = |pods: Vec<k8s_openapi::api::core::v1::Pod>| {
            let mut n: Vec<String> = pods.into_iter().filter_map(|p| p.metadata.uid).collect();
            n.sort();
            n
        };
        let before = names(rollout.pods("app=podinfo-primary").await);
        let generation = rollout
            .deployment("podinfo-primary")
            .await
            .metadata
            .generation;
        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.2, 40.0)
            .await;
        let seen = record_switches(&rollout, CanaryPhase::Failed).await;
        println!("apex selector and phase: {seen:?}");
        assert!(
            seen.iter().all(|(app, _)| app == "podinfo-primary"),
            "the apex never switched: {seen:?}"
        );
        let status = rollout.canary().await.status.unwrap();
        assert_eq!(status.failed_checks, 2);
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.0"));
        assert_eq!(
            primary.metadata.generation, generation,
            "the primary was not touched"
        );
        assert_eq!(
            names(rollout.pods("app=podinfo-primary").await),
            before,
            "the primary's pods were never restarted"
        );
        rollout
            .await_replicas("podinfo", 0, "the canary is scaled to 0")
            .await;
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_canary_without_a_provider_is_routed_by_the_controllers_default_provider() {
    with_namespace("e2e-bg-default", |client, ns| async move {
        let mut rollout = Rollout::start_without_controller(client, &ns, 200);
        rollout.controller_args = vec!["--provider".into(), "kubernetes".into()];
        rollout.start_controller();
        let mut spec = blue_green_canary(2);
        spec["spec"].as_object_mut().unwrap().remove("provider");
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        apex_selects(
            &rollout,
            "podinfo-primary",
            "the apex Service selects the primary, as the kubernetes provider does",
        )
        .await;
        assert_eq!(
            rollout.vs_weights().await,
            None,
            "no VirtualService or HTTPRoute was written for a Canary the kubernetes provider routes"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

/// Flagger's blue/green tutorial: an acceptance test as a `pre-rollout` webhook, a load
/// test as a `rollout` webhook, and a `confirm-promotion` gate.
#[tokio::test]
async fn blue_green_runs_its_acceptance_test_before_the_iterations_and_waits_for_the_promotion_gate()
 {
    with_namespace("e2e-bg-gates", |client, ns| async move {
        let hooks = crate::gates::Receiver::start().await;
        hooks.set("/pre", 500);
        hooks.set("/promote", 403);
        let mut spec = blue_green_canary(3);
        // A failed acceptance test is retried an interval later: 5 s leaves the test
        // time to see the first failure and open the webhook before the retry.
        spec["spec"]["analysis"]["interval"] = json!("5s");
        spec["spec"]["analysis"]["webhooks"] = json!([
            hooks.hook("acceptance-test", "pre-rollout", "/pre"),
            hooks.hook("load-test", "rollout", "/load"),
            hooks.hook("promotion-gate", "confirm-promotion", "/promote"),
        ]);
        let rollout = Rollout::start(client, &ns).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        // Error-free, so that the one failed check is the acceptance test's.
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.0, 40.0)
            .await;

        eventually(
            "the failing acceptance test to count a failed check",
            SETTLE,
            || async {
                let status = rollout.canary().await.status.unwrap_or_default();
                match (status.failed_checks, status.iterations) {
                    (1, 0) => Ok(()),
                    other => Err(format!("(failed checks, iterations) {other:?}")),
                }
            },
        )
        .await;
        assert!(
            hooks.calls("/load").is_empty(),
            "no load test before the acceptance test passes"
        );
        hooks.set("/pre", 200);
        rollout
            .await_phase(CanaryPhase::WaitingPromotion, SETTLE)
            .await;
        assert_eq!(
            apex_app(&rollout).await,
            "podinfo-primary",
            "users stay on the primary while the promotion waits"
        );
        let status = rollout.canary().await.status.unwrap();
        assert_eq!(status.iterations, 3, "{:?}", status.message);
        let message = status.message.unwrap_or_default();
        assert!(message.contains("promotion-gate"), "{message}");
        assert_eq!(
            hooks.calls("/pre").len(),
            2,
            "the acceptance test runs until it passes, not at every iteration"
        );
        assert!(hooks.calls("/load").len() >= 3, "a load test per iteration");

        hooks.set("/promote", 200);
        let switches = record_switches(&rollout, CanaryPhase::Succeeded).await;
        assert!(
            switches.iter().any(|(app, _)| app == "podinfo"),
            "the apex Service switched to the canary's pods: {switches:?}"
        );
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
        println!(
            "blue/green gates: acceptance test called {} times, load test {} times, promotion gate {} times",
            hooks.calls("/pre").len(),
            hooks.calls("/load").len(),
            hooks.calls("/promote").len()
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
