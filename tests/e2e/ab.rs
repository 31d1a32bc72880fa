//! A/B testing, mirroring and session affinity, end to end. The simulator's users are
//! real to the routes: a share of them carries the A/B header, all of them keep the
//! cookies the routes set, and it counts what reached whom
//! (`serin_sim_user_requests_total`), the mirrored copies
//! (`serin_sim_mirrored_requests_total`) and the users moved off the canary while
//! session affinity held them there (`serin_sim_user_switches_total`).

use std::time::{Duration, Instant};

use kube::{
    Api,
    api::DynamicObject,
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::{eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(90);

/// The simulator's users: 20% of them send `x-canary: insider`.
const TAGGED: &[&str] = &["--user-header", "x-canary=insider", "--tagged-share", "0.2"];

/// The test Canary run by `iterations` rounds instead of weights.
fn iterated(threshold: u32, iterations: u32) -> Value {
    let mut spec = canary_spec(threshold);
    let analysis = &mut spec["spec"]["analysis"];
    analysis.as_object_mut().unwrap().remove("stepWeight");
    analysis.as_object_mut().unwrap().remove("maxWeight");
    analysis["iterations"] = json!(iterations);
    spec
}

/// An A/B test on the header `x-canary: insider`.
fn ab_canary() -> Value {
    let mut spec = iterated(2, 4);
    spec["spec"]["analysis"]["match"] = json!([{"headers": {"x-canary": {"exact": "insider"}}}]);
    spec
}

/// The Gateway `public` the simulator serves.
fn gateway() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "public"},
        "spec": {
            "gatewayClassName": "trafficsim",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}]
        }
    })
}

/// Routes `canary` through an HTTPRoute behind the Gateway `public`.
fn through_gateway(canary: &mut Value) {
    canary["spec"]["provider"] = json!("gatewayapi");
    canary["spec"]["service"]["gatewayRefs"] = json!([{"name": "public"}]);
    canary["spec"]["service"]["hosts"] = json!(["podinfo.example.com"]);
}

/// The share the live route mirrors to the canary: the VirtualService's
/// `mirrorPercentage`, or the HTTPRoute's `RequestMirror` filter (100 without `percent`).
async fn mirror_percent(rollout: &Rollout) -> Option<f64> {
    if let Some(vs) = virtual_service(rollout).await {
        return vs["spec"]["http"][0]["mirrorPercentage"]["value"].as_f64();
    }
    let route = rollout.http_route().await?;
    let filters = route.data["spec"]["rules"][0]["filters"]
        .as_array()?
        .clone();
    let mirror = filters.iter().find(|f| f["type"] == "RequestMirror")?;
    Some(mirror["requestMirror"]["percent"].as_f64().unwrap_or(100.0))
}

/// The route's (mirror percentage, canary weight), both from one version of the route:
/// they are read one after the other, so the read is repeated until the mirror read
/// before and after the weight agree.
async fn route_state(rollout: &Rollout) -> (Option<f64>, u64) {
    loop {
        let before = mirror_percent(rollout).await;
        let weight = rollout.vs_weights().await.map(|w| w.1).unwrap_or(0);
        if mirror_percent(rollout).await == before {
            return (before, weight);
        }
    }
}

/// User requests the simulator counted so far, by (service, tagged).
async fn user_requests(rollout: &Rollout) -> std::collections::BTreeMap<(String, bool), u64> {
    let mut out = std::collections::BTreeMap::new();
    for s in rollout.sim_samples("serin_sim_user_requests_total").await {
        *out.entry((s.label("service").to_string(), s.label("tagged") == "true"))
            .or_default() += s.value as u64;
    }
    out
}

async fn sim_total(rollout: &Rollout, metric: &str, service: Option<&str>) -> u64 {
    rollout
        .sim_samples(metric)
        .await
        .iter()
        .filter(|s| service.is_none_or(|svc| s.label("service") == svc))
        .map(|s| s.value as u64)
        .sum()
}

async fn virtual_service(rollout: &Rollout) -> Option<Value> {
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let api: Api<DynamicObject> = Api::namespaced_with(
        rollout.client.clone(),
        &rollout.ns,
        &ApiResource::from_gvk(&gvk),
    );
    Some(api.get_opt("podinfo").await.ok()??.data)
}

/// Releases 6.0.1 by A/B test and checks that only the tagged users reached the canary.
async fn ab_release(rollout: &Rollout, canary: Value, label: &str) {
    rollout
        .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
        .await;
    rollout.apply("kustomize-controller", &canary).await;
    rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
    rollout
        .await_weights((100, 0), "the matching route sends everyone to the primary")
        .await;
    let before = user_requests(rollout).await;
    rollout
        .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
        .await;
    eventually(
        "the matching requests to go to the canary",
        SETTLE,
        || async {
            match rollout.vs_weights().await {
                Some((0, 100)) => Ok(()),
                other => Err(format!("routes {other:?}")),
            }
        },
    )
    .await;
    let done = rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
    let after = user_requests(rollout).await;
    let grew = |service: &str, tagged: bool| {
        let key = (service.to_string(), tagged);
        after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0)
    };
    let (canary_tagged, canary_other) =
        (grew("podinfo-canary", true), grew("podinfo-canary", false));
    let (primary_tagged, primary_other) = (
        grew("podinfo-primary", true),
        grew("podinfo-primary", false),
    );
    println!(
        "{label} A/B: at the canary {canary_tagged} matching requests and {canary_other} others; at the primary {primary_tagged} matching and {primary_other} others"
    );
    assert!(canary_tagged > 0, "the matching users reached the canary");
    assert_eq!(canary_other, 0, "no other user reached the canary");
    assert!(primary_other > 0);
    let status = done.status.unwrap();
    assert_eq!(status.iterations, 4, "promoted after its iterations");
    let primary = rollout.deployment("podinfo-primary").await;
    assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
    rollout.assert_no_request_reached_an_unready_backend().await;
}

#[tokio::test]
async fn istio_ab_test_sends_only_the_matching_requests_to_the_canary_then_promotes_it() {
    with_namespace("e2e-ab-istio", |client, ns| async move {
        let mut rollout = Rollout::start_with_sim_args(client, &ns, 100, TAGGED);
        rollout.start_controller();
        ab_release(&rollout, ab_canary(), "Istio").await;
        let vs = virtual_service(&rollout).await.unwrap();
        assert_eq!(
            vs["spec"]["http"][1]["route"],
            json!([{"destination": {"host": "podinfo-primary"}, "weight": 100}]),
            "the others' route"
        );
    })
    .await;
}

#[tokio::test]
async fn istio_ab_test_with_errors_is_rolled_back_and_never_promoted() {
    with_namespace("e2e-ab-rollback", |client, ns| async move {
        let mut rollout = Rollout::start_with_sim_args(client, &ns, 100, TAGGED);
        rollout.start_controller();
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &ab_canary()).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.2, 40.0)
            .await;
        let failed = rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
        rollout
            .await_weights((100, 0), "the matching requests return to the primary")
            .await;
        let requests = user_requests(&rollout).await;
        println!(
            "A/B rollback: {}; user requests {requests:?}",
            failed.status.unwrap().message.unwrap_or_default()
        );
        assert_eq!(
            requests.get(&("podinfo-canary".to_string(), false)),
            None,
            "no other user reached the failing canary"
        );
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.0"));
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn gateway_api_ab_test_sends_only_the_matching_requests_to_the_canary_then_promotes_it() {
    with_namespace("e2e-ab-gwapi", |client, ns| async move {
        let mut rollout = Rollout::start_with_sim_args(client, &ns, 100, TAGGED);
        rollout.start_controller();
        rollout.apply("kustomize-controller", &gateway()).await;
        let mut canary = ab_canary();
        through_gateway(&mut canary);
        ab_release(&rollout, canary, "Gateway API").await;
        let route = rollout.http_route().await.unwrap();
        assert_eq!(
            route.data["spec"]["rules"][0]["matches"][0]["headers"],
            json!([{"name": "x-canary", "type": "Exact", "value": "insider"}])
        );
    })
    .await;
}

#[tokio::test]
async fn istio_mirroring_comes_before_any_user_reaches_the_canary() {
    with_namespace("e2e-mirror", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        mirrored_release(&rollout, iterated(2, 4), "Istio").await;
    })
    .await;
}

#[tokio::test]
async fn gateway_api_mirroring_comes_before_any_user_reaches_the_canary() {
    with_namespace("e2e-mirror-gwapi", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout.apply("kustomize-controller", &gateway()).await;
        let mut canary = iterated(2, 4);
        through_gateway(&mut canary);
        mirrored_release(&rollout, canary, "Gateway API").await;
    })
    .await;
}

/// Releases 6.0.1 by blue/green with half the requests mirrored, recording the route.
async fn mirrored_release(rollout: &Rollout, mut canary: Value, label: &str) {
    {
        canary["spec"]["analysis"]["mirror"] = json!(true);
        canary["spec"]["analysis"]["mirrorWeight"] = json!(50);
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &canary).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        // Record each distinct (mirror percentage, canary weight) the route carries.
        let deadline = Instant::now() + SETTLE;
        let mut seen: Vec<(Option<f64>, u64)> = Vec::new();
        let mut mirrored_before_switch = 0;
        loop {
            // The simulator's counters first, then the route: a route that still sends
            // no user to the canary did so for every request counted before.
            let users_at_canary = sim_total(
                rollout,
                "serin_sim_user_requests_total",
                Some("podinfo-canary"),
            )
            .await;
            let mirrored = sim_total(
                rollout,
                "serin_sim_mirrored_requests_total",
                Some("podinfo-canary"),
            )
            .await;
            let (mirror, weight) = route_state(rollout).await;
            if seen.last() != Some(&(mirror, weight)) {
                seen.push((mirror, weight));
            }
            if seen.iter().all(|(_, w)| *w == 0) {
                // No user reached the canary yet: its copies are not user requests.
                assert_eq!(
                    users_at_canary, 0,
                    "mirrored copies counted as user requests"
                );
                mirrored_before_switch = mirrored;
            }
            let phase = rollout.canary().await.status.unwrap_or_default().phase;
            if phase == CanaryPhase::Succeeded {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out; seen {seen:?}\n{}",
                rollout.controller_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let users_at_canary = sim_total(
            rollout,
            "serin_sim_user_requests_total",
            Some("podinfo-canary"),
        )
        .await;
        println!(
            "{label} mirroring: route states {seen:?}; {mirrored_before_switch} copies mirrored to the canary before the switch, {users_at_canary} user requests served by it (during the switch)"
        );
        let first_mirror = seen.iter().position(|(m, _)| *m == Some(50.0));
        let first_traffic = seen.iter().position(|(_, w)| *w > 0);
        assert!(first_mirror.is_some(), "the route mirrored 50%: {seen:?}");
        assert!(
            first_traffic.is_none_or(|t| first_mirror.unwrap() < t),
            "the mirror step comes before any weighted traffic: {seen:?}"
        );
        assert!(
            seen.iter().all(|(m, w)| m.is_none() || *w == 0),
            "never a mirror while users reach the canary: {seen:?}"
        );
        assert!(mirrored_before_switch > 0);
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
        rollout.assert_no_request_reached_an_unready_backend().await;
    }
}

#[tokio::test]
async fn istio_session_affinity_keeps_the_canarys_users_on_it() {
    with_namespace("e2e-affinity", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        affinity_release(&rollout, canary_spec(2), "Istio").await;
        let vs = virtual_service(&rollout).await.unwrap();
        assert_eq!(
            vs["spec"]["http"][0]["headers"]["response"]["add"]["Set-Cookie"]
                .as_str()
                .map(|c| c.ends_with("Max-Age=-1")),
            Some(true),
            "after the release the canary's cookie is removed: {vs}"
        );
    })
    .await;
}

#[tokio::test]
async fn gateway_api_session_affinity_keeps_the_canarys_users_on_it() {
    with_namespace("e2e-affinity-gwapi", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout.apply("kustomize-controller", &gateway()).await;
        let mut canary = canary_spec(2);
        through_gateway(&mut canary);
        affinity_release(&rollout, canary, "Gateway API").await;
    })
    .await;
}

/// Releases 6.0.1 step by step with session affinity (a canary and a primary cookie).
async fn affinity_release(rollout: &Rollout, mut canary: Value, label: &str) {
    canary["spec"]["analysis"]["sessionAffinity"] =
        json!({"cookieName": "canary-user", "primaryCookieName": "primary-user", "maxAge": 600});
    rollout
        .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
        .await;
    rollout.apply("kustomize-controller", &canary).await;
    rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
    rollout
        .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
        .await;
    let weights = rollout
        .record_weights_until(CanaryPhase::Succeeded, SETTLE)
        .await;
    let switches = sim_total(rollout, "serin_sim_user_switches_total", None).await;
    let at_canary = sim_total(
        rollout,
        "serin_sim_user_requests_total",
        Some("podinfo-canary"),
    )
    .await;
    println!(
        "{label} session affinity: weights {weights:?}; {at_canary} user requests served by the canary; {switches} users moved from the canary to the primary while affinity held"
    );
    assert!(weights.contains(&50), "{weights:?}");
    assert!(at_canary > 0);
    assert_eq!(
        switches, 0,
        "no user moved from the canary back to the primary"
    );
    let primary = rollout.deployment("podinfo-primary").await;
    assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
    rollout.assert_no_request_reached_an_unready_backend().await;
}
