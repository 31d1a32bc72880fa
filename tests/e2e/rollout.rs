//! Canary releases with the Istio provider, end to end: what a user sees in the Canary's
//! status and events, the VirtualService weights and the Deployments.

use std::time::{Duration, Instant};

use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::with_namespace;

const SETTLE: Duration = Duration::from_secs(60);

/// Applies the app and the Canary, and waits for initialization.
async fn initialized(rollout: &Rollout, threshold: u32) {
    rollout
        .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
        .await;
    rollout
        .apply("kustomize-controller", &canary_spec(threshold))
        .await;
    rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
}

#[tokio::test]
async fn a_new_canary_initializes_the_primary_services_and_routes() {
    with_namespace("e2e-init", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        initialized(&rollout, 2).await;

        let primary = rollout.deployment("podinfo-primary").await;
        let status = primary.status.clone().unwrap_or_default();
        assert_eq!(
            status.ready_replicas,
            Some(2),
            "the primary runs 2 ready replicas"
        );
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.0"));
        rollout
            .await_replicas("podinfo", 0, "the target is scaled to 0")
            .await;

        let services: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(rollout.client.clone(), &ns);
        for name in ["podinfo", "podinfo-primary", "podinfo-canary"] {
            assert!(
                services.get_opt(name).await.unwrap().is_some(),
                "Service {name} exists"
            );
        }
        rollout
            .await_weights((100, 0), "the VirtualService routes 100/0")
            .await;

        let canary = rollout.canary().await;
        let ready = canary
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "Ready is True: {ready:?}");
        println!("initialization took {:?}", rollout.elapsed());
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn an_image_change_applied_by_flux_is_promoted_step_by_step() {
    with_namespace("e2e-promote", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        initialized(&rollout, 5).await;

        let applied = Instant::now();
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        rollout
            .await_phase(CanaryPhase::Progressing, Duration::from_secs(10))
            .await;
        println!(
            "new revision detected {:?} after it was applied",
            applied.elapsed()
        );

        let mut weights = rollout
            .record_weights_until(CanaryPhase::Succeeded, SETTLE)
            .await;
        // Polling starts after the detection, which may already have routed the first step.
        if weights.first() == Some(&0) {
            weights.remove(0);
        }
        assert_eq!(
            weights,
            [10, 20, 30, 40, 50, 0],
            "the canary weight steps by 10 up to 50, then back to 0"
        );

        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(
            Rollout::image(&primary),
            format!("{IMAGE}:6.0.1"),
            "the primary runs the new image"
        );
        rollout
            .await_replicas("podinfo", 0, "the canary is scaled to 0")
            .await;
        rollout.await_event("Succeeded").await;
        println!("promotion scenario took {:?}", rollout.elapsed());
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

/// Rolls out a release that behaves badly and checks what the user sees after rollback.
async fn rolled_back(
    ns: &str,
    client: kube::Client,
    error_rate: f64,
    latency_ms: f64,
    metric: &str,
) {
    let rollout = Rollout::start(client, ns).await;
    initialized(&rollout, 2).await;
    rollout
        .apply_app("kustomize-controller", "6.0.2", error_rate, latency_ms)
        .await;
    let canary = rollout.await_phase(CanaryPhase::Failed, SETTLE).await;

    let status = canary.status.unwrap();
    assert_eq!(
        status.failed_checks, 2,
        "rolled back after threshold (2) failed checks"
    );
    rollout
        .await_weights((100, 0), "all traffic is back on the primary")
        .await;
    rollout
        .await_replicas("podinfo", 0, "the canary is scaled to 0")
        .await;
    assert_eq!(
        Rollout::image(&rollout.deployment("podinfo-primary").await),
        format!("{IMAGE}:6.0.0")
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    let events = rollout.await_event("RolledBack").await;
    let warning = events
        .iter()
        .find(|(kind, reason, _)| kind == "Warning" && reason == "RolledBack")
        .unwrap_or_else(|| panic!("a RolledBack warning: {events:?}"));
    assert!(
        warning.2.contains(metric),
        "the warning names {metric}: {}",
        warning.2
    );
    assert!(
        warning.2.chars().any(|c| c.is_ascii_digit()),
        "the warning gives the value: {}",
        warning.2
    );
    println!("rollback on {metric} took {:?}", rollout.elapsed());
    rollout.assert_no_request_reached_an_unready_backend().await;
}

#[tokio::test]
async fn a_release_with_20_percent_errors_is_rolled_back() {
    with_namespace("e2e-errors", |client, ns| async move {
        rolled_back(&ns, client, 0.2, 40.0, "request-success-rate").await;
    })
    .await;
}

#[tokio::test]
async fn a_release_whose_p99_latency_breaks_request_duration_is_rolled_back() {
    with_namespace("e2e-latency", |client, ns| async move {
        rolled_back(&ns, client, 0.0, 400.0, "request-duration").await;
    })
    .await;
}

/// Waits until the canary weight is at least `weight` during analysis.
async fn await_weight(rollout: &Rollout, weight: i32) {
    crate::harness::eventually(&format!("canary weight {weight}"), SETTLE, || async {
        let status = rollout.canary().await.status.unwrap_or_default();
        if status.phase == CanaryPhase::Progressing && status.canary_weight >= weight {
            Ok(())
        } else {
            Err(format!(
                "phase {} weight {}",
                status.phase, status.canary_weight
            ))
        }
    })
    .await
}

#[tokio::test]
async fn a_second_image_change_during_analysis_restarts_it_from_weight_zero() {
    with_namespace("e2e-restart", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        initialized(&rollout, 5).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        await_weight(&rollout, 20).await;
        let first = rollout.canary().await.status.unwrap().last_applied_spec;

        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.001, 40.0)
            .await;
        let weights = rollout
            .record_weights_until(CanaryPhase::Succeeded, SETTLE)
            .await;
        // The route follows the recorded status within the reconcile, so the first
        // weights seen may still be the first revision's steps.
        let restarted_at = weights
            .iter()
            .position(|w| *w == 0)
            .expect("the weight went back to 0");
        assert_eq!(
            weights[restarted_at..],
            [0, 10, 20, 30, 40, 50, 0],
            "the analysis restarted from weight 0: {weights:?}"
        );

        let status = rollout.canary().await.status.unwrap();
        assert_ne!(
            status.last_applied_spec, first,
            "the new revision is the one analysed"
        );
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.2")
        );
        let events = rollout.events().await;
        assert!(
            events.iter().any(|(_, reason, _)| reason == "Restarted"),
            "a Restarted event: {events:?}"
        );
        println!("restart scenario took {:?}", rollout.elapsed());
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_change_to_a_mounted_config_map_is_released_as_a_canary() {
    use k8s_openapi::api::core::v1::ConfigMap;
    with_namespace("e2e-config", |client, ns| async move {
        let rollout = Rollout::start(client.clone(), &ns).await;
        let config = |greeting: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podinfo-config"}, "data": {"greeting": greeting}})
        };
        rollout.apply("kustomize-controller", &config("hello")).await;
        rollout.apply("kustomize-controller", &crate::fixture::podinfo("6.0.0", 0.001, 40.0, Some("podinfo-config"))).await;
        rollout.apply("kustomize-controller", &canary_spec(5)).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;

        let configs: kube::Api<ConfigMap> = kube::Api::namespaced(client, &ns);
        let greeting = |cm: ConfigMap| cm.data.unwrap_or_default().get("greeting").cloned();
        assert_eq!(greeting(configs.get("podinfo-config-primary").await.unwrap()).as_deref(), Some("hello"));
        let primary = rollout.deployment("podinfo-primary").await;
        let volumes = primary.spec.unwrap().template.spec.unwrap().volumes.unwrap();
        assert_eq!(volumes[0].config_map.as_ref().unwrap().name, "podinfo-config-primary", "the primary mounts its own copy");

        rollout.apply("kustomize-controller", &config("hola")).await;
        rollout.await_phase(CanaryPhase::Progressing, Duration::from_secs(10)).await;
        assert_eq!(
            greeting(configs.get("podinfo-config-primary").await.unwrap()).as_deref(),
            Some("hello"),
            "the primary keeps the old config during analysis"
        );
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        assert_eq!(greeting(configs.get("podinfo-config-primary").await.unwrap()).as_deref(), Some("hola"));
        println!("config scenario took {:?}", rollout.elapsed());
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn with_prometheus_unreachable_the_checks_fail_and_nothing_is_promoted() {
    with_namespace("e2e-noprom", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        // This Canary reads its own Prometheus, which the test stops mid-analysis.
        let mut prometheus = crate::fixture::Prometheus::start(&ns);
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        let mut spec = canary_spec(3);
        spec["spec"]["metricsServer"] = serde_json::json!(prometheus.url());
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        // Analysis starts once this Prometheus holds the primary's traffic.
        prometheus
            .await_series(&format!(
                r#"istio_requests_total{{destination_workload_namespace="{ns}"}}"#
            ))
            .await;

        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        await_weight(&rollout, 20).await;
        prometheus.stop().await;

        let canary = rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
        let message = canary.status.unwrap().message.unwrap_or_default();
        assert!(
            message.contains("unreachable"),
            "the status says Prometheus is unreachable: {message}"
        );
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.0"),
            "nothing was promoted"
        );
        rollout
            .await_weights((100, 0), "all traffic is back on the primary")
            .await;
        println!(
            "unreachable-Prometheus scenario took {:?}",
            rollout.elapsed()
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn with_no_data_hold_a_prometheus_outage_holds_the_weight_and_the_release_goes_on_after_it() {
    with_namespace("e2e-promhold", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        // This Canary reads Prometheus through a proxy that the test makes answer 503.
        let proxy = crate::faults::PrometheusProxy::start(&rollout.env.prometheus_url).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        let mut spec = canary_spec(2);
        spec["spec"]["metricsServer"] = serde_json::json!(proxy.url);
        for metric in spec["spec"]["analysis"]["metrics"].as_array_mut().unwrap() {
            metric["noData"] = serde_json::json!("hold");
        }
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;

        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        await_weight(&rollout, 20).await;
        proxy.set(crate::faults::PrometheusFault::Down);
        // A round in flight may still step once; then the weight holds.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = rollout.canary().await.status.unwrap();
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            let status = rollout.canary().await.status.unwrap();
            assert_eq!(
                status.phase,
                CanaryPhase::Progressing,
                "{:?}",
                status.message
            );
            assert_eq!(
                status.canary_weight, held.canary_weight,
                "no step while Prometheus does not answer: {:?}",
                status.message
            );
            assert_eq!(status.failed_checks, 0, "an outage is not a failed check");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let message = rollout.status_message().await;
        assert!(
            message.contains("holding while the metrics server does not answer"),
            "the status says why it holds: {message}"
        );

        proxy.set(crate::faults::PrometheusFault::None);
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.1"),
            "the release was promoted once Prometheus answered again"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_controller_killed_mid_analysis_resumes_and_promotes() {
    with_namespace("e2e-kill", |client, ns| async move {
        let mut rollout = Rollout::start(client, &ns).await;
        initialized(&rollout, 5).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        await_weight(&rollout, 20).await;

        rollout.kill_controller().await;
        let frozen = rollout.canary().await.status.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let still = rollout.canary().await.status.unwrap();
        assert_eq!(
            still.canary_weight, frozen.canary_weight,
            "nothing moves without a controller"
        );

        rollout.start_controller();
        let weights = rollout
            .record_weights_until(CanaryPhase::Succeeded, SETTLE)
            .await;
        assert!(
            weights.iter().all(|w| *w <= 50),
            "never above maxWeight: {weights:?}"
        );
        assert_eq!(weights.last(), Some(&0));
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.1")
        );
        println!("kill-and-resume scenario took {:?}", rollout.elapsed());
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
