//! The scale writes the target cache does not show yet, so that a reconcile between a
//! scale write and its watch event does not write the same scale again.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::api::apps::v1::Deployment;

/// By target: the resourceVersion of the cached target a scale write was planned from,
/// and the replicas written.
#[derive(Default)]
pub(super) struct Scaled(Mutex<HashMap<String, (String, i32)>>);

fn key(target: &Deployment) -> String {
    format!(
        "{}/{}",
        target.metadata.namespace.as_deref().unwrap_or_default(),
        target.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Scaled {
    /// `target`, as cached, was scaled to `replicas` (the write succeeded).
    pub(super) fn record(&self, target: &Deployment, replicas: i32) {
        if let Some(rv) = target.metadata.resource_version.clone() {
            self.0
                .lock()
                .expect("lock")
                .insert(key(target), (rv, replicas));
        }
    }

    /// The replicas written to `target` while the cache still shows the version the
    /// write was planned from; `None` once it shows any other version (the write came
    /// back, or someone changed the target since: its cached replicas then hold).
    pub(super) fn since(&self, target: &Deployment) -> Option<i32> {
        let key = key(target);
        let mut scaled = self.0.lock().expect("lock");
        let (rv, replicas) = scaled.get(&key)?;
        if target.metadata.resource_version.as_ref() == Some(rv) {
            return Some(*replicas);
        }
        scaled.remove(&key);
        None
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use kube::api::ObjectMeta;

    use super::*;

    fn target(rv: &str, replicas: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("podinfo".into()),
                namespace: Some("test".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_scale_counts_as_written_until_the_cache_shows_another_version() {
        let scaled = Scaled::default();
        assert_eq!(scaled.since(&target("10", 1)), None, "nothing written yet");
        scaled.record(&target("10", 1), 0);
        // The cache still holds the version the write was planned from.
        assert_eq!(scaled.since(&target("10", 1)), Some(0));
        // The write came back (or someone changed the target): the cache decides.
        assert_eq!(scaled.since(&target("11", 0)), None);
        assert_eq!(
            scaled.since(&target("10", 1)),
            None,
            "forgotten once passed"
        );
    }

    #[test]
    fn each_target_is_recorded_apart() {
        let scaled = Scaled::default();
        scaled.record(&target("10", 0), 2);
        let mut other = target("10", 0);
        other.metadata.name = Some("backend".into());
        assert_eq!(scaled.since(&other), None);
        assert_eq!(scaled.since(&target("10", 0)), Some(2));
    }
}
