//! Canary releases through Gateway API HTTPRoutes, end to end: a Gateway parent
//! (`gatewayapi`), a Service parent with Linkerd's metrics (`linkerd`), and a route whose
//! parent does not accept it. The simulator plays the gateway controller: it marks the
//! routes it serves as accepted in their `status.parents` and sends traffic by their
//! weights.

use std::time::Duration;

use serde_json::{Value, json};
use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::{eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(60);

/// A Gateway the simulator serves; `accept: false` makes it refuse routes.
fn gateway(accept: bool) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "public", "annotations": {"sim.serin.dev/accept": accept.to_string()}},
        "spec": {
            "gatewayClassName": "trafficsim",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}]
        }
    })
}

/// The test Canary routed by a Gateway API HTTPRoute behind the Gateway `public`.
fn gateway_canary(threshold: u32) -> Value {
    let mut spec = canary_spec(threshold);
    spec["spec"]["provider"] = json!("gatewayapi:v1beta1");
    spec["spec"]["service"]["gatewayRefs"] = json!([{"name": "public"}]);
    spec["spec"]["service"]["hosts"] = json!(["podinfo.example.com"]);
    spec["spec"]["service"]["timeout"] = json!("15s");
    spec
}

/// The test Canary with `provider: linkerd` (an HTTPRoute whose parent is the apex
/// Service) judged by Flagger's Linkerd success-rate MetricTemplate and the builtin
/// latency on Linkerd's series.
fn linkerd_canary(threshold: u32) -> Value {
    let mut spec = canary_spec(threshold);
    spec["spec"]["provider"] = json!("linkerd");
    spec["spec"]["analysis"]["metrics"] = json!([
        {"name": "success-rate", "templateRef": {"name": "success-rate"}, "thresholdRange": {"min": 99}, "interval": "5s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "5s"}
    ]);
    spec
}

/// Flagger's Linkerd success-rate template (docs/gitbook/tutorials/linkerd-progressive-delivery.md).
fn linkerd_success_rate(prometheus: &str) -> Value {
    json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "MetricTemplate",
        "metadata": {"name": "success-rate"},
        "spec": {
            "provider": {"type": "prometheus", "address": prometheus},
            "query": r#"sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}])) / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) * 100"#
        }
    })
}

async fn released(rollout: &Rollout, canary: Value, tag: &str, error_rate: f64) -> CanaryPhase {
    rollout
        .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
        .await;
    rollout.apply("kustomize-controller", &canary).await;
    rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
    rollout
        .await_weights((100, 0), "the HTTPRoute routes 100/0")
        .await;
    rollout
        .apply_app("kustomize-controller", tag, error_rate, 40.0)
        .await;
    let mut weights = rollout
        .record_weights_until(
            if error_rate > 0.05 {
                CanaryPhase::Failed
            } else {
                CanaryPhase::Succeeded
            },
            SETTLE,
        )
        .await;
    if weights.first() == Some(&0) {
        weights.remove(0);
    }
    println!("{} canary weights seen: {weights:?}", rollout.ns);
    if error_rate > 0.05 {
        rollout
            .await_weights((100, 0), "all traffic is back on the primary")
            .await;
        CanaryPhase::Failed
    } else {
        assert_eq!(weights, [10, 20, 30, 40, 50, 0], "steps of 10 up to 50");
        CanaryPhase::Succeeded
    }
}

fn route_accepted(route: &kube::api::DynamicObject) -> bool {
    route.data["status"]["parents"]
        .as_array()
        .is_some_and(|ps| {
            !ps.is_empty()
                && ps.iter().all(|p| {
                    p["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Accepted" && c["status"] == "True")
                    })
                })
        })
}

#[tokio::test]
async fn a_gateway_api_canary_behind_a_gateway_is_promoted() {
    with_namespace("e2e-gw-promote", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout.apply("kustomize-controller", &gateway(true)).await;
        released(&rollout, gateway_canary(5), "6.0.1", 0.001).await;
        let route = rollout.http_route().await.expect("the HTTPRoute exists");
        assert_eq!(route.data["spec"]["parentRefs"][0]["name"], "public");
        assert_eq!(
            route.data["spec"]["hostnames"],
            json!(["podinfo.example.com"])
        );
        assert_eq!(route.data["spec"]["rules"][0]["timeouts"]["request"], "15s");
        assert!(
            route_accepted(&route),
            "the Gateway accepted the route: {:?}",
            route.data["status"]
        );
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
        rollout
            .await_replicas("podinfo", 0, "the canary is scaled to 0")
            .await;
        let sim = rollout.sim_samples("istio_requests_total").await;
        assert!(
            sim.iter()
                .any(|s| s.label("destination_workload") == "podinfo"),
            "the canary served requests through the Gateway"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_gateway_api_canary_with_errors_is_rolled_back() {
    with_namespace("e2e-gw-rollback", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout.apply("kustomize-controller", &gateway(true)).await;
        released(&rollout, gateway_canary(2), "6.0.2", 0.2).await;
        let status = rollout.canary().await.status.unwrap();
        assert_eq!(status.failed_checks, 2);
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.0"));
        rollout
            .await_replicas("podinfo", 0, "the canary is scaled to 0")
            .await;
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_linkerd_canary_is_promoted_on_linkerd_metrics() {
    with_namespace("e2e-linkerd-promote", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout
            .apply(
                "kustomize-controller",
                &linkerd_success_rate(&rollout.env.prometheus_url),
            )
            .await;
        released(&rollout, linkerd_canary(5), "6.0.1", 0.001).await;
        let route = rollout.http_route().await.expect("the HTTPRoute exists");
        assert_eq!(
            route.data["spec"]["parentRefs"],
            json!([{"group": "", "kind": "Service", "name": "podinfo", "port": 9898}]),
            "the route's parent is the apex Service (GAMMA)"
        );
        assert!(route_accepted(&route));
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_linkerd_canary_with_errors_is_rolled_back() {
    with_namespace("e2e-linkerd-rollback", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout
            .apply(
                "kustomize-controller",
                &linkerd_success_rate(&rollout.env.prometheus_url),
            )
            .await;
        released(&rollout, linkerd_canary(2), "6.0.2", 0.2).await;
        let status = rollout.canary().await.status.unwrap();
        assert!(
            status
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("success-rate"),
            "{:?}",
            status.message
        );
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.0"));
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_route_its_gateway_does_not_accept_holds_progress_and_says_why() {
    with_namespace("e2e-gw-hold", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout.apply("kustomize-controller", &gateway(true)).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout
            .apply("kustomize-controller", &gateway_canary(2))
            .await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        // The gateway stops accepting the route, then a release is applied.
        rollout.apply("kustomize-controller", &gateway(false)).await;
        eventually(
            "the Gateway refuses the route",
            Duration::from_secs(10),
            || async {
                match rollout.http_route().await {
                    Some(r) if !route_accepted(&r) => Ok(()),
                    other => Err(format!("{:?}", other.map(|r| r.data["status"].clone()))),
                }
            },
        )
        .await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        rollout
            .await_phase(CanaryPhase::Progressing, Duration::from_secs(20))
            .await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let status = rollout.canary().await.status.unwrap();
        assert_eq!(status.phase, CanaryPhase::Progressing);
        assert_eq!(
            status.canary_weight, 0,
            "no step while the route is refused"
        );
        assert_eq!(rollout.vs_weights().await, Some((100, 0)));
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == "RouteAccepted")
            .expect("a RouteAccepted condition");
        assert_eq!(condition.status, "False");
        assert!(
            condition
                .message
                .contains("Gateway public does not accept HTTPRoute podinfo"),
            "{condition:?}"
        );
        println!("held with: {}", condition.message);
        // Once the Gateway accepts it, the release proceeds and is promoted.
        rollout.apply("kustomize-controller", &gateway(true)).await;
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        eventually(
            "RouteAccepted is True again",
            Duration::from_secs(10),
            || async {
                let status = rollout.canary().await.status.unwrap_or_default();
                match status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "RouteAccepted")
                {
                    Some(c) if c.status == "True" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
