//! Decisions between the analysis ticks: the sequential test, evaluated every
//! `analysis.sequential.evaluationInterval` on the raw request counters, rolls back a
//! canary with 10% errors or a doubled p99 seconds after its first traffic, long before
//! the first tick, and promotes a healthy canary with `promoteEarly` before its last step.

use std::time::Duration;

use serde_json::json;
use serin::api::{Canary, CanaryPhase};

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::with_namespace;

const SETTLE: Duration = Duration::from_secs(120);

/// Seconds from the canary's first traffic (`analysisStartTime`, set by the first step)
/// to its last phase change.
fn first_traffic_to_decision(canary: &Canary) -> f64 {
    let s = canary.status.clone().unwrap();
    let start = s.analysis_start_time.unwrap().0;
    let end = s.last_transition_time.unwrap().0;
    end.duration_since(start).as_secs_f64()
}

/// A Canary whose first analysis tick is 30 s after the first traffic, with the
/// sequential test evaluated every second (the local Prometheus scrapes every second).
fn spec(sequential: serde_json::Value) -> serde_json::Value {
    let mut spec = canary_spec(2);
    spec["spec"]["analysis"]["interval"] = json!("30s");
    spec["spec"]["analysis"]["metrics"] = json!([
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"}
    ]);
    spec["spec"]["analysis"]["sequential"] = sequential;
    spec
}

async fn assert_rolled_back_by_the_sequential_test(rollout: &Rollout, test: &str) -> Canary {
    let canary = rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
    let status = canary.status.clone().unwrap();
    let message = status.message.clone().unwrap_or_default();
    let seconds = first_traffic_to_decision(&canary);
    println!("rolled back {seconds:.1} s after the first traffic: {message}");
    println!(
        "last evidence: {:?}",
        status
            .sequential_test
            .as_ref()
            .and_then(|t| t.evidence.clone())
    );
    assert!(
        message.starts_with(&format!("sequential test ({test})")),
        "the sequential test decided: {message}"
    );
    assert!(
        seconds < 30.0,
        "rolled back before the first analysis tick (30 s): {seconds:.1} s"
    );
    assert!(status.failed_checks >= 1, "counted as a failed check");
    let events = rollout.await_event("RolledBack").await;
    let rolled_back = events
        .iter()
        .find(|(_, reason, _)| reason == "RolledBack")
        .unwrap();
    assert!(
        rolled_back.2.contains("sequential test"),
        "the event says why: {rolled_back:?}"
    );
    assert_eq!(
        Rollout::image(&rollout.deployment("podinfo-primary").await),
        format!("{IMAGE}:6.0.0"),
        "nothing bad was promoted"
    );
    rollout.assert_no_request_reached_an_unready_backend().await;
    canary
}

#[tokio::test]
async fn ten_percent_errors_are_rolled_back_seconds_after_the_first_traffic() {
    with_namespace("e2e-seq-errors", |client, ns| async move {
        let rollout = Rollout::start_with_rps(client, &ns, 1000).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.0, 40.0)
            .await;
        rollout
            .apply(
                "kustomize-controller",
                &spec(json!({"enabled": true, "evaluationInterval": "1s"})),
            )
            .await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.1, 40.0)
            .await;
        assert_rolled_back_by_the_sequential_test(&rollout, "errors").await;
    })
    .await;
}

#[tokio::test]
async fn a_doubled_p99_is_rolled_back_by_the_sequential_test_on_latency() {
    with_namespace("e2e-seq-latency", |client, ns| async move {
        let rollout = Rollout::start_with_rps(client, &ns, 1000).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.0, 40.0)
            .await;
        rollout
            .apply(
                "kustomize-controller",
                &spec(json!({"enabled": true, "evaluationInterval": "1s", "latencyBucket": 100})),
            )
            .await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        // The median (and so the p99, about 100 ms) doubles; the p99 stays far below
        // the 500 ms threshold that Flagger's check would need.
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.0, 80.0)
            .await;
        assert_rolled_back_by_the_sequential_test(&rollout, "slower than 100ms").await;
    })
    .await;
}

#[tokio::test]
async fn a_healthy_canary_with_promote_early_is_promoted_before_its_last_step() {
    with_namespace("e2e-seq-early", |client, ns| async move {
        let rollout = Rollout::start_with_rps(client, &ns, 1000).await;
        // Both versions fail 5% of requests: the test needs failures to tell that the
        // canary fails no more often than the primary.
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.05, 40.0)
            .await;
        let mut spec = canary_spec(2);
        spec["spec"]["analysis"]["interval"] = json!("10s");
        spec["spec"]["analysis"]["metrics"] = json!([
            {"name": "request-success-rate", "thresholdRange": {"min": 90}, "interval": "10s"}
        ]);
        spec["spec"]["analysis"]["sequential"] =
            json!({"enabled": true, "evaluationInterval": "1s", "promoteEarly": true});
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.05, 40.0)
            .await;
        let weights = rollout
            .record_weights_until(CanaryPhase::Succeeded, SETTLE)
            .await;
        let canary = rollout.canary().await;
        let status = canary.status.clone().unwrap();
        println!(
            "promoted {:.1} s after the first traffic, weights {weights:?}; evidence {:?}",
            first_traffic_to_decision(&canary),
            status
                .sequential_test
                .as_ref()
                .and_then(|t| t.evidence.clone())
        );
        assert!(
            !weights.contains(&50),
            "promoted before the last step (50): {weights:?}"
        );
        let events = rollout.events().await;
        let early = events
            .iter()
            .find(|(_, reason, _)| reason == "PromoteEarly")
            .unwrap_or_else(|| panic!("a PromoteEarly event: {events:?}"));
        println!("{}", early.2);
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.1"),
            "promoted"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
