//! What the caches keep of each object: only the fields serin reads.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Resource, ResourceExt};

use super::APPLIED_ANNOTATION;

/// Drops what serin never reads: managed fields and the last-applied annotation.
pub fn trim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What a metadata cache keeps: the name, namespace, resourceVersion and owners (owned
/// Services wake their Canary) and [`APPLIED_ANNOTATION`]; labels, other annotations and
/// managed fields are never read from it.
pub(super) fn trim_meta<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.labels = None;
    meta.creation_timestamp = None;
    meta.uid = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| k == APPLIED_ANNOTATION);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A Deployment as the cache keeps it: trimmed, and for a primary (it carries the
/// revision annotation and a Canary owns it) without its pod template, which serin
/// always derives from the target and never reads back.
pub(super) fn trim_deployment(deployment: &mut Deployment) {
    trim(deployment);
    let is_primary = deployment
        .annotations()
        .contains_key(crate::workloads::deployment::REVISION_ANNOTATION)
        && deployment
            .owner_references()
            .iter()
            .any(|o| o.kind == "Canary" && o.controller == Some(true));
    if is_primary && let Some(spec) = deployment.spec.as_mut() {
        spec.template = Default::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use kube::core::PartialObjectMeta;
    use serde_json::{Value, json};

    fn deployment(annotations: Value, owners: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {
                "name": "podinfo-primary", "namespace": "apps", "resourceVersion": "7",
                "annotations": annotations, "ownerReferences": owners,
                "managedFields": [{"manager": "serin", "operation": "Apply"}]
            },
            "spec": {
                "replicas": 2, "selector": {"matchLabels": {"app": "podinfo-primary"}},
                "template": {"metadata": {"labels": {"app": "podinfo-primary"}},
                             "spec": {"containers": [{"name": "app", "image": "podinfo:6.0.0"}]}}
            }
        }))
        .unwrap()
    }

    fn canary_owner() -> Value {
        json!([{"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "name": "podinfo",
                "uid": "u1", "controller": true}])
    }

    #[test]
    fn a_cached_primary_keeps_its_replicas_and_revision_but_not_its_pod_template() {
        let mut primary = deployment(
            json!({crate::workloads::deployment::REVISION_ANNOTATION: "abc"}),
            canary_owner(),
        );
        trim_deployment(&mut primary);
        assert_eq!(primary.metadata.managed_fields, None);
        let spec = primary.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.template, Default::default());
        assert_eq!(
            primary.metadata.annotations.unwrap()
                [crate::workloads::deployment::REVISION_ANNOTATION],
            "abc"
        );
    }

    #[test]
    fn a_cached_target_keeps_its_pod_template() {
        // Not a primary: no revision annotation, or no Canary as its controller.
        for (annotations, owners) in [
            (json!({}), canary_owner()),
            (
                json!({crate::workloads::deployment::REVISION_ANNOTATION: "abc"}),
                json!([]),
            ),
        ] {
            let mut target = deployment(annotations, owners);
            trim_deployment(&mut target);
            assert!(target.spec.unwrap().template.spec.is_some());
        }
    }

    #[test]
    fn a_metadata_cache_keeps_the_applied_hash_the_version_and_the_owners_only() {
        let mut meta: PartialObjectMeta<Service> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "podinfo", "namespace": "apps", "resourceVersion": "9", "uid": "u2",
                "labels": {"app": "podinfo"},
                "annotations": {APPLIED_ANNOTATION: "h1", "team": "payments"},
                "ownerReferences": canary_owner(),
                "managedFields": [{"manager": "serin", "operation": "Apply"}]
            }
        }))
        .unwrap();
        trim_meta(&mut meta);
        let m = meta.metadata;
        assert_eq!(m.name.as_deref(), Some("podinfo"));
        assert_eq!(m.resource_version.as_deref(), Some("9"));
        assert_eq!(
            m.annotations,
            Some([(APPLIED_ANNOTATION.to_string(), "h1".to_string())].into())
        );
        assert_eq!(m.owner_references.map(|o| o.len()), Some(1));
        assert_eq!((m.labels, m.managed_fields), (None, None));
    }
}
