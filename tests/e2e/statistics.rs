//! serin's statistical judgement, end to end: a regression that a fixed threshold lets
//! through is caught by comparing the canary with the primary.

use std::time::Duration;

use serde_json::json;
use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::{prometheus_query, with_namespace};

const ERROR_RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ target }}",response_code=~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ target }}"}[{{ interval }}]))"#;

#[tokio::test]
async fn an_error_rate_that_doubles_under_a_99_percent_threshold_is_rolled_back_by_the_statistics()
{
    with_namespace("e2e-stats", |client, ns| async move {
        // Enough traffic that a doubling of a 0.3% error rate is visible within a minute.
        let rollout = Rollout::start_with_rps(client, &ns, 4000).await;
        rollout.apply_app("kustomize-controller", "6.0.0", 0.003, 40.0).await;
        let mut spec = canary_spec(3);
        spec["spec"]["analysis"]["interval"] = json!("3s");
        // Flagger's policy: success rate at least 99%, which 99.2% passes...
        spec["spec"]["analysis"]["metrics"] = json!([
            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"},
            // ...and serin's: the canary's error rate compared with the primary's.
            {"name": "error-rate", "query": ERROR_RATE, "interval": "5s", "compare": {"direction": "increase"}}
        ]);
        spec["spec"]["analysis"]["sequential"] = json!({"enabled": true, "falseRollbackRate": 0.01});
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, Duration::from_secs(60)).await;

        rollout.apply_app("kustomize-controller", "6.0.1", 0.006, 40.0).await;
        let canary = rollout.await_phase(CanaryPhase::Failed, Duration::from_secs(90)).await;

        let message = canary.status.unwrap().message.unwrap_or_default();
        println!("rolled back: {message}");
        assert!(
            message.contains("sequential test") || message.contains("judge score"),
            "the statistical check made the decision: {message}"
        );
        // Flagger's check over a short window is noisy while the canary's series are
        // young and may fail once; the failures that reach the threshold are the judge's.
        // The status is written before the events: wait for the rollback's.
        let events = rollout.await_event("RolledBack").await;
        let statistical = events
            .iter()
            .filter(|(_, _, note)| note.contains("judge score") || note.contains("sequential test"))
            .count();
        assert!(
            message.contains("sequential test") || statistical >= 2,
            "the sequential test decided, or the judge failed at least two of the three checks that counted: {events:?}"
        );
        // What Flagger's check saw over the analysis: the canary's success rate stayed above 99%.
        let env = crate::harness::Env::get();
        let q = format!(
            r#"100 * (1 - sum(increase(istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}",destination_workload="podinfo",response_code=~"5.*"}}[5m])) / sum(increase(istio_requests_total{{reporter="destination",destination_workload_namespace="{ns}",destination_workload="podinfo"}}[5m])))"#
        );
        let success: f64 = prometheus_query(&env, &q).await.unwrap()[0]["value"][1].as_str().unwrap().parse().unwrap();
        println!("canary success rate over the analysis: {success:.2}%");
        assert!(success > 99.0, "the canary stayed above Flagger's threshold: {success}");
        assert_eq!(Rollout::image(&rollout.deployment("podinfo-primary").await), format!("{IMAGE}:6.0.0"), "not promoted");
        println!("statistical rollback scenario took {:?}", rollout.elapsed());
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
