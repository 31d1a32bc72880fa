//! The rest of a Canary's life: MetricTemplates, the primary's autoscaler, and giving the
//! traffic back to the target when the Canary is deleted with `revertOnDeletion`.

use std::time::Duration;

use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, core::v1::Service};
use kube::{Api, api::DeleteParams};
use serde_json::json;
use serin::api::{Canary, CanaryPhase};

use crate::fixture::{Rollout, canary_spec};
use crate::harness::{await_object, eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_metric_template_with_variables_rolls_back_a_bad_release() {
    with_namespace("e2e-template", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout
            .apply(
                "kustomize-controller",
                &json!({
                    "apiVersion": "serin.dev/v1alpha1", "kind": "MetricTemplate",
                    "metadata": {"name": "error-rate"},
                    "spec": {
                        "provider": {"type": "prometheus", "address": rollout.env.prometheus_url},
                        "query": r#"100 * sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ target }}",response_code=~"{{ variables.codes }}"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ target }}"}[{{ interval }}]))"#
                    }
                }),
            )
            .await;
        rollout.apply_app("kustomize-controller", "6.0.0", 0.001, 40.0).await;
        let mut spec = canary_spec(2);
        spec["spec"]["analysis"]["metrics"] = json!([{
            "name": "error-rate", "templateRef": {"name": "error-rate"},
            "templateVariables": {"codes": "5.*"}, "thresholdRange": {"max": 1}, "interval": "5s"
        }]);
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;

        rollout.apply_app("kustomize-controller", "6.0.1", 0.2, 40.0).await;
        let canary = rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
        let message = canary.status.unwrap().message.unwrap_or_default();
        assert!(message.contains("error-rate") && message.contains("above the maximum 1"), "{message}");
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn the_primary_gets_a_copy_of_the_targets_autoscaler() {
    with_namespace("e2e-hpa", |client, ns| async move {
        let rollout = Rollout::start(client.clone(), &ns).await;
        rollout.apply_app("kustomize-controller", "6.0.0", 0.001, 40.0).await;
        rollout
            .apply(
                "kustomize-controller",
                &json!({
                    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "podinfo"},
                    "spec": {
                        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                        "minReplicas": 2, "maxReplicas": 4,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
                    }
                }),
            )
            .await;
        let mut spec = canary_spec(2);
        spec["spec"]["autoscalerRef"] = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"});
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;

        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client, &ns);
        let primary = hpas.get("podinfo-primary").await.expect("the primary's autoscaler exists");
        let spec = primary.spec.unwrap();
        assert_eq!(spec.scale_target_ref.name, "podinfo-primary");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 4));
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn deleting_a_canary_with_revert_on_deletion_gives_the_traffic_back_to_the_target() {
    with_namespace("e2e-revert", |client, ns| async move {
        let rollout = Rollout::start(client.clone(), &ns).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        let mut spec = canary_spec(2);
        spec["spec"]["revertOnDeletion"] = json!(true);
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .await_replicas("podinfo", 0, "the target is scaled to 0")
            .await;

        let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
        canaries
            .delete("podinfo", &DeleteParams::default())
            .await
            .unwrap();
        eventually("the Canary to be gone", SETTLE, || async {
            match canaries.get_opt("podinfo").await {
                Ok(None) => Ok(()),
                other => Err(format!(
                    "still there: {:?}",
                    other.map(|c| c.map(|c| c.status))
                )),
            }
        })
        .await;

        let target = rollout.deployment("podinfo").await;
        assert_eq!(
            Rollout::replicas(&target),
            2,
            "the target is scaled back up"
        );
        assert_eq!(
            target.status.and_then(|s| s.ready_replicas),
            Some(2),
            "and ready"
        );
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let apex = await_object(
            &services,
            "podinfo",
            SETTLE,
            "the apex Service to remain",
            |_| Ok(()),
        )
        .await;
        let selector = apex.spec.unwrap().selector.unwrap_or_default();
        assert_eq!(
            selector.get("app").map(String::as_str),
            Some("podinfo"),
            "the apex Service selects the target's pods"
        );
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client, &ns);
        eventually("the primary to be garbage collected", SETTLE, || async {
            match deployments.get_opt("podinfo-primary").await {
                Ok(None) => Ok(()),
                _ => Err("podinfo-primary still exists".to_string()),
            }
        })
        .await;
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
