//! The ConfigMaps and Secrets a pod template uses. Changes to their data are part of the
//! target's revision, and the primary gets its own `-primary` copies so that a new
//! config under test never reaches the primary before promotion.
//!
//! A config is not tracked when it carries the annotation
//! `serin.dev/config-tracking: disabled` (or Flagger's `flagger.app/config-tracking`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;

pub const TRACKING_ANNOTATIONS: [&str; 2] =
    ["serin.dev/config-tracking", "flagger.app/config-tracking"];

/// Kind of a tracked config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

impl ConfigKind {
    pub fn prefix(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "configmap",
            ConfigKind::Secret => "secret",
        }
    }
}

/// A ConfigMap or Secret referenced by a pod template.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

impl ConfigRef {
    /// The key used in `status.trackedConfigs`, e.g. `configmap/podinfo-config`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.prefix(), self.name)
    }
}

/// Every ConfigMap and Secret the pod spec refers to: volumes (also projected), envFrom
/// and env valueFrom. Image pull secrets are not part of a release.
pub fn referenced(spec: &PodSpec) -> BTreeSet<ConfigRef> {
    let mut refs = BTreeSet::new();
    let mut add = |kind, name: &str| {
        refs.insert(ConfigRef {
            kind,
            name: name.to_string(),
        });
    };
    for volume in spec.volumes.iter().flatten() {
        if let Some(cm) = &volume.config_map {
            add(ConfigKind::ConfigMap, &cm.name);
        }
        if let Some(secret) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            add(ConfigKind::Secret, secret);
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &source.config_map {
                add(ConfigKind::ConfigMap, &cm.name);
            }
            if let Some(secret) = &source.secret {
                add(ConfigKind::Secret, &secret.name);
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        for from in container.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                add(ConfigKind::ConfigMap, &cm.name);
            }
            if let Some(secret) = &from.secret_ref {
                add(ConfigKind::Secret, &secret.name);
            }
        }
        for env in container.env.iter().flatten() {
            let Some(from) = &env.value_from else {
                continue;
            };
            if let Some(cm) = &from.config_map_key_ref {
                add(ConfigKind::ConfigMap, &cm.name);
            }
            if let Some(secret) = &from.secret_key_ref {
                add(ConfigKind::Secret, &secret.name);
            }
        }
    }
    refs
}

/// Points every reference to a tracked config at its `-primary` copy.
pub fn point_at_primary_copies(spec: &mut PodSpec, tracked: &BTreeSet<ConfigRef>) {
    let rename = |kind: ConfigKind, name: &mut String| {
        if tracked.contains(&ConfigRef {
            kind,
            name: name.clone(),
        }) {
            *name = format!("{name}-primary");
        }
    };
    for volume in spec.volumes.iter_mut().flatten() {
        if let Some(cm) = &mut volume.config_map {
            rename(ConfigKind::ConfigMap, &mut cm.name);
        }
        if let Some(secret) = volume.secret.as_mut().and_then(|s| s.secret_name.as_mut()) {
            rename(ConfigKind::Secret, secret);
        }
        for source in volume
            .projected
            .iter_mut()
            .flat_map(|p| p.sources.iter_mut().flatten())
        {
            if let Some(cm) = &mut source.config_map {
                rename(ConfigKind::ConfigMap, &mut cm.name);
            }
            if let Some(secret) = &mut source.secret {
                rename(ConfigKind::Secret, &mut secret.name);
            }
        }
    }
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for container in containers {
        for from in container.env_from.iter_mut().flatten() {
            if let Some(cm) = &mut from.config_map_ref {
                rename(ConfigKind::ConfigMap, &mut cm.name);
            }
            if let Some(secret) = &mut from.secret_ref {
                rename(ConfigKind::Secret, &mut secret.name);
            }
        }
        for env in container.env.iter_mut().flatten() {
            let Some(from) = &mut env.value_from else {
                continue;
            };
            if let Some(cm) = &mut from.config_map_key_ref {
                rename(ConfigKind::ConfigMap, &mut cm.name);
            }
            if let Some(secret) = &mut from.secret_key_ref {
                rename(ConfigKind::Secret, &mut secret.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod_spec() -> PodSpec {
        serde_json::from_value(json!({
            "containers": [{
                "name": "app",
                "envFrom": [{"configMapRef": {"name": "env-config"}}],
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}}],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/config"}]
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "app-config"}},
                {"name": "tls", "secret": {"secretName": "app-tls"}}
            ],
            "imagePullSecrets": [{"name": "registry"}]
        }))
        .unwrap()
    }

    #[test]
    fn volumes_env_from_and_env_references_are_found_but_pull_secrets_are_not() {
        let keys: Vec<String> = referenced(&pod_spec()).iter().map(ConfigRef::key).collect();
        assert_eq!(
            keys,
            [
                "configmap/app-config",
                "configmap/env-config",
                "secret/app-tls",
                "secret/token"
            ]
        );
    }

    #[test]
    fn the_primary_points_at_copies_of_tracked_configs_only() {
        let mut spec = pod_spec();
        let tracked: BTreeSet<ConfigRef> = [ConfigRef {
            kind: ConfigKind::ConfigMap,
            name: "app-config".into(),
        }]
        .into();
        point_at_primary_copies(&mut spec, &tracked);
        let volumes = spec.volumes.unwrap();
        assert_eq!(
            volumes[0].config_map.as_ref().unwrap().name,
            "app-config-primary"
        );
        assert_eq!(
            volumes[1].secret.as_ref().unwrap().secret_name.as_deref(),
            Some("app-tls")
        );
        let env_from = spec.containers[0].env_from.as_ref().unwrap();
        assert_eq!(
            env_from[0].config_map_ref.as_ref().unwrap().name,
            "env-config"
        );
    }
}
