//! Traffic routers: what users reach (the apex Service `<svc>`) and the mesh objects
//! that split its traffic between primary and canary. A router only builds objects,
//! purely; [`apply`] is the one place that writes them. A new provider is a new file.

pub mod gatewayapi;
pub mod istio;
pub mod kubernetes;
pub mod strategy;

use std::collections::BTreeMap;

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::Value;
use thiserror::Error;

use crate::api::{Canary, Provider};
use crate::workloads::deployment::build_service;

/// The field manager of everything serin writes.
pub const FIELD_MANAGER: &str = "serin";

#[derive(Debug, Error)]
pub enum Error {
    #[error("writing {kind} {name}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0} is not a valid object to apply (it needs apiVersion, kind and metadata.name)")]
    Invalid(String),
    #[error("provider {0} is not supported yet")]
    Unsupported(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How traffic is split, in percent; the two always add up to 100. With `analysis.match`
/// (A/B testing) the split applies to the matching requests only; the others go to the
/// primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    pub primary: u32,
    pub canary: u32,
    /// The percentage of the requests also copied to the canary (mirrored), whose
    /// answers are dropped.
    pub mirror: Option<u32>,
}

impl Weights {
    /// The split that sends `canary` percent to the canary.
    pub fn with_canary(canary: u32) -> Weights {
        let canary = canary.min(100);
        Weights {
            primary: 100 - canary,
            canary,
            mirror: None,
        }
    }

    /// The same split, with `mirror` percent copied to the canary.
    pub fn mirrored(self, mirror: Option<u32>) -> Weights {
        Weights {
            mirror: mirror.map(|m| m.min(100)),
            ..self
        }
    }
}

/// The pods of each version, as Service selectors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backends {
    pub primary: BTreeMap<String, String>,
    pub canary: BTreeMap<String, String>,
}

/// A provider's routing, built purely.
pub trait TrafficRouter: Send + Sync {
    /// The apex Service and the mesh objects that send `weights` of its traffic to each
    /// version, owned by the Canary.
    fn desired(&self, canary: &Canary, backends: &Backends, weights: Weights) -> Vec<Value>;

    /// What a Canary deleted with `revertOnDeletion` leaves: the apex Service selecting
    /// the target's pods and no longer owned by the Canary (so it outlives it), and
    /// routes that send everything to the target until they are garbage collected.
    fn revert(&self, canary: &Canary, backends: &Backends) -> Vec<Value>;
}

/// The router of a provider.
pub fn for_provider(provider: Provider) -> Option<&'static dyn TrafficRouter> {
    match provider {
        Provider::Istio => Some(&istio::IstioRouter),
        Provider::GatewayApi
        | Provider::GatewayApiV1
        | Provider::GatewayApiV1beta1
        | Provider::Linkerd => Some(&gatewayapi::GatewayApiRouter),
        Provider::Kubernetes => Some(&kubernetes::KubernetesRouter),
        // Flagger's other providers are accepted by the schema only.
        _ => None,
    }
}

/// The apex Service `<svc>`, selecting `selector`.
pub fn apex_service(canary: &Canary, selector: &BTreeMap<String, String>, owned: bool) -> Value {
    let service = build_service(
        canary,
        canary.service_name(),
        selector.clone(),
        canary.spec.service.apex.as_ref(),
        owned,
    );
    serde_json::to_value(service).unwrap_or_default()
}

/// The resource, kind and name of an object to apply.
pub fn resource_of(object: &Value) -> Option<(ApiResource, String, String)> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((
        ApiResource::from_gvk(&gvk),
        kind.to_string(),
        name.to_string(),
    ))
}

/// Writes `objects` into `namespace` with server-side apply, in order.
pub async fn apply(client: &Client, namespace: &str, objects: &[Value]) -> Result<()> {
    for object in objects {
        let (resource, kind, name) =
            resource_of(object).ok_or_else(|| Error::Invalid(object.to_string()))?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|source| Error::Apply { kind, name, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_always_add_up_to_100() {
        for w in [0, 10, 50, 100, 150] {
            let weights = Weights::with_canary(w);
            assert_eq!(weights.primary + weights.canary, 100);
        }
    }

    #[test]
    fn the_applier_knows_each_objects_resource_from_its_api_version_and_kind() {
        let vs = serde_json::json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "podinfo"}});
        let (resource, kind, name) = resource_of(&vs).unwrap();
        assert_eq!(
            (resource.group.as_str(), resource.plural.as_str()),
            ("networking.istio.io", "virtualservices")
        );
        assert_eq!(
            (kind.as_str(), name.as_str()),
            ("VirtualService", "podinfo")
        );
        let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo"}});
        assert_eq!(resource_of(&svc).unwrap().0.plural, "services");
        assert!(resource_of(&serde_json::json!({"kind": "Service"})).is_none());
    }
}
