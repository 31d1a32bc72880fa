//! The primary Deployment derived from the target, the Services in front of both, and
//! what "ready" means for a Deployment.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{Pod, Service, ServicePort, ServiceSpec},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::api::Canary;
use crate::rollout::plan::Readiness;
use crate::workloads::configs::{ConfigRef, point_at_primary_copies};

/// Annotation on the primary: the revision it runs.
pub const REVISION_ANNOTATION: &str = "serin.dev/revision";

/// The labels that select the primary's pods: the target's selector labels with
/// `-primary` appended to each value.
pub fn primary_selector(target: &Deployment) -> BTreeMap<String, String> {
    target_selector(target)
        .into_iter()
        .map(|(k, v)| (k, format!("{v}-primary")))
        .collect()
}

/// The target's selector labels (its `matchLabels`).
pub fn target_selector(target: &Deployment) -> BTreeMap<String, String> {
    target
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
}

/// The replicas the target runs when scaled up: its own count if it has one, else the
/// primary's, else 1.
pub fn desired_replicas(target: &Deployment, primary: Option<&Deployment>) -> i32 {
    replicas_of(target)
        .or_else(|| primary.and_then(replicas_of))
        .unwrap_or(1)
}

fn replicas_of(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas).filter(|r| *r > 0)
}

/// The primary's replicas when a revision is promoted into it: what the target asks
/// for, but never fewer than the primary runs now, because the primary serves (most of)
/// the traffic throughout the promotion. A GitOps tool re-applying a smaller `replicas`
/// to the target must not shrink the primary under load; scaling the primary down is
/// its autoscaler's job (`autoscalerRef`).
pub fn promoted_replicas(target: &Deployment, primary: Option<&Deployment>) -> i32 {
    let wanted = desired_replicas(target, primary);
    primary
        .and_then(replicas_of)
        .map_or(wanted, |now| now.max(wanted))
}

/// The primary: a copy of the target's pod template with `-primary` selector labels,
/// pointing at `-primary` copies of the tracked configs, owned by the Canary.
pub fn build_primary(
    canary: &Canary,
    target: &Deployment,
    replicas: Option<i32>,
    revision: &str,
    tracked: &BTreeSet<ConfigRef>,
) -> Deployment {
    let target_spec = target.spec.clone().unwrap_or_default();
    let selector = primary_selector(target);
    let mut template = target_spec.template.clone();
    let mut meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.extend(selector.clone());
    meta.labels = Some(labels);
    template.metadata = Some(meta);
    if let Some(spec) = template.spec.as_mut() {
        point_at_primary_copies(spec, tracked);
    }
    let mut labels: BTreeMap<String, String> = target.labels().clone();
    labels.extend(selector.clone());
    Deployment {
        metadata: ObjectMeta {
            name: Some(canary.primary_name()),
            namespace: canary.namespace(),
            labels: Some(labels),
            annotations: Some([(REVISION_ANNOTATION.to_string(), revision.to_string())].into()),
            owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template,
            min_ready_seconds: target_spec.min_ready_seconds,
            revision_history_limit: target_spec.revision_history_limit,
            strategy: target_spec.strategy,
            progress_deadline_seconds: target_spec.progress_deadline_seconds,
            paused: None,
        }),
        status: None,
    }
}

/// Whether a Deployment's current template is rolled out and enough replicas (percent
/// `threshold`) are available; if not, why, in words.
pub fn readiness(deployment: &Deployment, threshold: u32) -> Readiness {
    let spec_replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Readiness::NotReady(format!(
            "{} rollout not yet observed",
            deployment.name_any()
        ));
    }
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Readiness::NotReady(format!(
            "{} exceeded its progress deadline: {}",
            deployment.name_any(),
            c.message.clone().unwrap_or_default()
        ));
    }
    if spec_replicas == 0 {
        return Readiness::NotReady(format!("{} is scaled to zero", deployment.name_any()));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    if updated < spec_replicas {
        return Readiness::NotReady(format!(
            "{} rollout: {updated} of {spec_replicas} replicas updated",
            deployment.name_any()
        ));
    }
    let available = status.available_replicas.unwrap_or(0);
    if i64::from(available) < needed(spec_replicas, threshold) {
        return Readiness::NotReady(format!(
            "{}: {available} of {spec_replicas} replicas available",
            deployment.name_any()
        ));
    }
    let total = status.replicas.unwrap_or(0);
    if total > updated {
        return Readiness::NotReady(format!(
            "{}: {} old replicas pending termination",
            deployment.name_any(),
            total - updated
        ));
    }
    Readiness::Ready
}

/// How many of `replicas` must serve for `threshold` percent: rounded up, at least one.
fn needed(replicas: i32, threshold: u32) -> i64 {
    ((i64::from(replicas) * i64::from(threshold) + 99) / 100).max(1)
}

/// Whether enough of `pods` (percent `threshold` of `replicas`) serve: Ready and not
/// terminating, as a mesh's endpoints count them. A Deployment's status is derived from
/// its ReplicaSets' and can, for a moment, still count pods that are being deleted (a
/// target scaled down and straight back up), so a switch of all traffic checks the pods
/// themselves.
pub fn pods_serving(pods: &[Pod], replicas: i32, threshold: u32) -> Readiness {
    let serving = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    if (serving as i64) < needed(replicas, threshold) {
        return Readiness::NotReady(format!(
            "{serving} of {replicas} pods ready and not terminating"
        ));
    }
    Readiness::Ready
}

/// A ClusterIP Service `name` for the Canary's port, selecting `selector`, with the
/// labels and annotations of `meta`; owned by the Canary when `owned`.
pub fn build_service(
    canary: &Canary,
    name: &str,
    selector: BTreeMap<String, String>,
    meta: Option<&crate::api::CustomMetadata>,
    owned: bool,
) -> Service {
    let svc = &canary.spec.service;
    let port = ServicePort {
        name: Some(svc.port_name.clone().unwrap_or_else(|| "http".to_string())),
        port: svc.port,
        target_port: Some(
            svc.target_port
                .clone()
                .unwrap_or(IntOrString::Int(svc.port)),
        ),
        protocol: Some("TCP".to_string()),
        app_protocol: svc.app_protocol.clone(),
        node_port: None,
    };
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: canary.namespace(),
            labels: meta.map(|m| m.labels.clone()).filter(|l| !l.is_empty()),
            annotations: meta
                .map(|m| m.annotations.clone())
                .filter(|a| !a.is_empty()),
            owner_references: canary
                .controller_owner_ref(&())
                .filter(|_| owned)
                .map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![port]),
            type_: Some("ClusterIP".to_string()),
            traffic_distribution: svc.traffic_distribution.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

/// The `<svc>-primary` and `<svc>-canary` Services, each selecting one version's pods.
/// The apex `<svc>` that users reach belongs to the traffic router.
pub fn build_services(canary: &Canary, target: &Deployment) -> Vec<Service> {
    let svc = &canary.spec.service;
    let headless = |mut service: Service| {
        if svc.headless
            && let Some(spec) = service.spec.as_mut()
        {
            spec.cluster_ip = Some("None".to_string());
        }
        service
    };
    [
        build_service(
            canary,
            &canary.primary_service_name(),
            primary_selector(target),
            svc.primary.as_ref(),
            true,
        ),
        build_service(
            canary,
            &canary.canary_service_name(),
            target_selector(target),
            svc.canary.as_ref(),
            true,
        ),
    ]
    .into_iter()
    .map(headless)
    .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "generation": 2},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": status
        }))
        .unwrap()
    }

    fn pod(ready: bool, terminating: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "deletionTimestamp": terminating.then_some("2026-12-02T07:00:00Z")},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn pods_that_are_being_deleted_do_not_serve_even_while_still_ready() {
        let pods = [pod(true, true), pod(true, true), pod(true, false)];
        assert_eq!(
            pods_serving(&pods, 2, 100),
            Readiness::NotReady("1 of 2 pods ready and not terminating".into())
        );
        assert_eq!(pods_serving(&pods, 2, 50), Readiness::Ready);
    }

    #[test]
    fn ready_pods_that_are_not_terminating_serve() {
        let pods = [pod(true, false), pod(false, false), pod(true, false)];
        assert_eq!(pods_serving(&pods, 2, 100), Readiness::Ready);
        assert!(!pods_serving(&[], 2, 100).is_ready());
    }

    #[test]
    fn a_rolled_out_deployment_with_all_replicas_available_is_ready() {
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(readiness(&d, 100), Readiness::Ready);
    }

    #[test]
    fn a_deployment_still_rolling_out_is_not_ready_and_says_why() {
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2}),
        );
        assert_eq!(
            readiness(&d, 100),
            Readiness::NotReady("podinfo rollout: 1 of 2 replicas updated".into())
        );
        let d = deployment(json!({"observedGeneration": 1}));
        assert_eq!(
            readiness(&d, 100),
            Readiness::NotReady("podinfo rollout not yet observed".into())
        );
    }

    #[test]
    fn the_ready_threshold_allows_some_unavailable_replicas() {
        let d = deployment(
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
        );
        assert!(!readiness(&d, 100).is_ready());
        assert!(readiness(&d, 50).is_ready());
    }

    #[test]
    fn primary_selector_values_get_the_primary_suffix() {
        let d = deployment(json!({}));
        assert_eq!(
            primary_selector(&d),
            [("app".to_string(), "podinfo-primary".to_string())].into()
        );
    }

    fn with_replicas(replicas: i32) -> Deployment {
        Deployment {
            spec: Some(k8s_openapi::api::apps::v1::DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_promotion_never_shrinks_the_primary_that_serves_the_traffic() {
        let primary = with_replicas(10);
        assert_eq!(promoted_replicas(&with_replicas(2), Some(&primary)), 10);
        assert_eq!(promoted_replicas(&with_replicas(12), Some(&primary)), 12);
        assert_eq!(promoted_replicas(&with_replicas(3), None), 3);
    }
}
