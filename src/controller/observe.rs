//! Observe: read the target, the primary and the tracked configs into one value, and
//! the gates given by annotation for the target's current revision.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret},
};
use kube::{Client, ResourceExt};

use super::{Result, stores::Stores};
use crate::api::{Canary, canary::annotations};
use crate::rollout::plan::{Gates, Observed, Primary, Target};
use crate::workloads::{
    configs::{ConfigKind, ConfigRef, TRACKING_ANNOTATIONS, referenced},
    deployment::{REVISION_ANNOTATION, readiness},
    revision::{data_hash, revision},
};

/// A tracked config as read now.
#[derive(Clone, Debug)]
pub enum ConfigData {
    ConfigMap(ConfigMap),
    Secret(Secret),
}

/// Everything read for one reconcile.
pub struct Snapshot {
    pub target: Option<Deployment>,
    pub primary: Option<Deployment>,
    pub configs: BTreeMap<ConfigRef, ConfigData>,
    pub observed: Observed,
    pub gates: Gates,
}

impl Snapshot {
    pub fn tracked(&self) -> BTreeSet<ConfigRef> {
        self.configs.keys().cloned().collect()
    }

    pub fn revision(&self) -> Option<&str> {
        self.observed.target.as_ref().map(|t| t.revision.as_str())
    }
}

fn tracking_disabled(annotations: &BTreeMap<String, String>) -> bool {
    TRACKING_ANNOTATIONS
        .iter()
        .any(|a| annotations.get(*a).is_some_and(|v| v == "disabled"))
}

async fn read_configs(
    client: &Client,
    stores: &Stores,
    ns: &str,
    target: &Deployment,
) -> Result<BTreeMap<ConfigRef, ConfigData>> {
    let Some(pod_spec) = target.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return Ok(BTreeMap::new());
    };
    let mut configs = BTreeMap::new();
    for config in referenced(pod_spec) {
        // A config that does not exist (yet) is not tracked: the target itself will not
        // become ready without it, and the deadline reports that.
        let data = match config.kind {
            ConfigKind::ConfigMap => stores
                .config::<ConfigMap>(client, ns, &config.name)
                .await?
                .map(ConfigData::ConfigMap),
            ConfigKind::Secret => stores
                .config::<Secret>(client, ns, &config.name)
                .await?
                .map(ConfigData::Secret),
        };
        let Some(data) = data else { continue };
        let annotations = match &data {
            ConfigData::ConfigMap(c) => c.annotations(),
            ConfigData::Secret(s) => s.annotations(),
        };
        if !tracking_disabled(annotations) {
            configs.insert(config, data);
        }
    }
    Ok(configs)
}

/// The hash of each tracked config's data, keyed `kind/name`.
pub fn config_hashes(configs: &BTreeMap<ConfigRef, ConfigData>) -> BTreeMap<String, String> {
    configs
        .iter()
        .map(|(r, data)| {
            let hash = match data {
                ConfigData::ConfigMap(cm) => {
                    let text = cm.data.clone().unwrap_or_default();
                    let binary = cm.binary_data.clone().unwrap_or_default();
                    let mut entries: Vec<(String, Vec<u8>)> =
                        text.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                    entries.extend(
                        binary
                            .into_iter()
                            .map(|(k, v)| (format!("binary:{k}"), v.0)),
                    );
                    data_hash(entries.iter().map(|(k, v)| (k, v.as_slice())))
                }
                ConfigData::Secret(s) => {
                    let entries: Vec<(String, Vec<u8>)> = s
                        .data
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    data_hash(entries.iter().map(|(k, v)| (k, v.as_slice())))
                }
            };
            (r.key(), hash)
        })
        .collect()
}

fn gate(canary: &Canary, annotation: &str, revision: &str) -> bool {
    canary
        .annotations()
        .get(annotation)
        .is_some_and(|v| v.trim() == revision)
}

/// The weight whose increase `value` approves for `revision`: approvals are written
/// `<revision>@<weight>`, so each one lets exactly one step through.
pub fn approved_increase(value: &str, revision: &str) -> Option<u32> {
    let (rev, weight) = value.trim().rsplit_once('@')?;
    (rev == revision).then(|| weight.parse().ok()).flatten()
}

/// The images of a Deployment's containers.
fn images(d: &Deployment) -> Vec<String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| {
            p.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads what a reconcile needs, from the caches once they have synced.
pub async fn observe(client: &Client, stores: &Stores, canary: &Canary) -> Result<Snapshot> {
    let ns = canary.namespace().unwrap_or_default();
    let target = stores
        .deployment(client, &ns, &canary.spec.target_ref.name)
        .await?;
    let primary = stores
        .deployment(client, &ns, &canary.primary_name())
        .await?;
    let configs = match &target {
        Some(t) => read_configs(client, stores, &ns, t).await?,
        None => BTreeMap::new(),
    };
    let analysis = &canary.spec.analysis;
    let observed_target = target.as_ref().map(|t| {
        let template =
            serde_json::to_value(t.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
        Target {
            revision: revision(&template, &config_hashes(&configs)),
            ready: readiness(t, analysis.canary_ready_threshold()),
        }
    });
    let observed_primary = primary.as_ref().map(|p| Primary {
        revision: p.annotations().get(REVISION_ANNOTATION).cloned(),
        ready: readiness(p, analysis.primary_ready_threshold()),
    });
    let gates = match &observed_target {
        Some(t) => Gates {
            start_approved: gate(canary, annotations::APPROVE_START, &t.revision),
            traffic_increase_approved_at: canary
                .annotations()
                .get(annotations::APPROVE_TRAFFIC_INCREASE)
                .and_then(|v| approved_increase(v, &t.revision)),
            promotion_approved: gate(canary, annotations::APPROVE_PROMOTION, &t.revision),
            abort: gate(canary, annotations::ABORT, &t.revision),
        },
        None => Gates::default(),
    };
    let images = target.as_ref().map(images).unwrap_or_default();
    Ok(Snapshot {
        target,
        primary,
        configs,
        observed: Observed {
            images,
            target: observed_target,
            primary: observed_primary,
            ..Default::default()
        },
        gates,
    })
}

/// For a Gateway API provider, whether the live HTTPRoute is accepted by every parent
/// (`Err` says why not); `None` for other providers or before the route exists.
pub async fn route_acceptance(
    client: &Client,
    stores: &Stores,
    canary: &Canary,
) -> Result<Option<std::result::Result<(), String>>> {
    if !canary.provider().uses_gateway_api() {
        return Ok(None);
    }
    let route = stores
        .route(
            client,
            &canary.namespace().unwrap_or_default(),
            crate::router::gatewayapi::API_VERSION,
            "HTTPRoute",
            canary.service_name(),
        )
        .await?;
    Ok(route.map(|r| {
        let value = serde_json::to_value(&r).unwrap_or_default();
        crate::router::gatewayapi::acceptance(&value)
    }))
}

#[cfg(test)]
mod tests {
    use super::approved_increase;

    #[test]
    fn a_traffic_increase_approval_names_the_revision_and_the_weight_it_leaves() {
        assert_eq!(approved_increase("abc123@20", "abc123"), Some(20));
        assert_eq!(approved_increase(" abc123@0 ", "abc123"), Some(0));
        assert_eq!(approved_increase("abc123@20", "def456"), None);
        assert_eq!(approved_increase("abc123", "abc123"), None);
        assert_eq!(approved_increase("abc123@x", "abc123"), None);
    }
}
