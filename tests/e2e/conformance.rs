//! Conformance tests at each traffic step and after promotion, end to end: the Jobs run
//! through the real Job controller (kwok ends their pods, tests/e2e/kwok-stages.yaml), one
//! per test and step; the next step waits for the tests of this one, a failing step test
//! rolls back, and the after-promotion test runs against the promoted primary before the
//! release succeeds.

use serde_json::json;
use serin::api::CanaryPhase;

use crate::fixture::{Rollout, canary_spec};
use crate::gates::{conformance_test, job_env, jobs_of, settle};
use crate::harness::with_namespace;

const SETTLE: std::time::Duration = std::time::Duration::from_secs(120);

fn run_of(job: &k8s_openapi::api::batch::v1::Job) -> (String, String) {
    let labels = job.metadata.labels.clone().unwrap_or_default();
    let env = job_env(job);
    assert_eq!(
        labels.get("serin.dev/conformance-run"),
        env.get("SERIN_CONFORMANCE_RUN"),
        "the label and the environment name the same run"
    );
    (
        labels["serin.dev/conformance-test"].clone(),
        env["SERIN_CONFORMANCE_RUN"].clone(),
    )
}

#[tokio::test]
async fn step_tests_gate_every_step_and_the_after_promotion_test_runs_against_the_primary() {
    with_namespace("e2e-conf-steps", |client, ns| async move {
        let mut spec = canary_spec(2);
        let mut load = conformance_test("load", "1s", json!({}));
        load["when"] = json!(["each-step"]);
        let mut primary = conformance_test("primary", "1s", json!({}));
        primary["when"] = json!(["after-promotion"]);
        spec["spec"]["analysis"]["conformanceTests"] =
            json!([conformance_test("smoke", "1s", json!({})), load, primary]);
        let rollout = Rollout::start(client.clone(), &ns).await;
        settle(&rollout, &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        let weights = rollout
            .record_weights_until(CanaryPhase::Succeeded, SETTLE)
            .await;
        println!("weights: {weights:?}");
        let mut runs: Vec<(String, String)> =
            jobs_of(&client, &ns).await.iter().map(run_of).collect();
        runs.sort();
        println!("conformance runs: {runs:?}");
        let expected: Vec<(String, String)> = [
            ("load", "step-10"),
            ("load", "step-20"),
            ("load", "step-30"),
            ("load", "step-40"),
            ("load", "step-50"),
            ("primary", "after-promotion"),
            ("smoke", "before-traffic"),
        ]
        .iter()
        .map(|(t, r)| (t.to_string(), r.to_string()))
        .collect();
        assert_eq!(runs, expected, "one Job per test and step, each run once");
        let status = rollout.canary().await.status.unwrap();
        assert!(
            status.history[0]
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("after-promotion conformance tests passed"),
            "{:?}",
            status.history
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_step_test_that_fails_rolls_the_release_back_quoting_it() {
    with_namespace("e2e-conf-fail", |client, ns| async move {
        let mut spec = canary_spec(2);
        let mut load = conformance_test(
            "load",
            "1s",
            json!({"serin.dev/e2e-fail": "p99 850ms over the 500ms budget"}),
        );
        load["when"] = json!(["each-step"]);
        spec["spec"]["analysis"]["conformanceTests"] = json!([load]);
        let rollout = Rollout::start(client.clone(), &ns).await;
        settle(&rollout, &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        let weights = rollout
            .record_weights_until(CanaryPhase::Failed, SETTLE)
            .await;
        println!("weights: {weights:?}");
        assert!(
            weights.iter().all(|w| *w <= 10),
            "no step beyond the first while its test failed: {weights:?}"
        );
        let message = rollout.status_message().await;
        assert!(
            message.contains("conformance test load failed")
                && message.contains("p99 850ms over the 500ms budget"),
            "{message}"
        );
        let events = rollout.await_event("RolledBack").await;
        assert!(
            events.iter().any(|(_, _, n)| n.contains("p99 850ms")),
            "{events:?}"
        );
        rollout
            .await_weights((100, 0), "all traffic back on the primary")
            .await;
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(
            Rollout::image(&primary),
            format!("{}:6.0.0", crate::fixture::IMAGE),
            "nothing was promoted"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
