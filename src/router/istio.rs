//! Istio: a VirtualService `<svc>` with one weighted http route to `<svc>-primary` and
//! `<svc>-canary`, and a DestinationRule for each, carrying `service.trafficPolicy`.
//! The objects are written with server-side apply and validated by Istio's real CRD.

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

use super::{Error, Result, TrafficRouter, Weights};
use crate::api::Canary;

pub const FIELD_MANAGER: &str = "serin";

pub struct IstioRouter;

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("networking.istio.io", "v1", kind))
}

fn owner(canary: &Canary) -> Value {
    json!(
        canary
            .controller_owner_ref(&())
            .map(|o| vec![o])
            .unwrap_or_default()
    )
}

/// The VirtualService for this split.
pub fn virtual_service(canary: &Canary, weights: Weights) -> Value {
    let svc = &canary.spec.service;
    let name = canary.service_name();
    let mut hosts = vec![name.to_string()];
    hosts.extend(svc.hosts.iter().filter(|h| h.as_str() != name).cloned());
    let mut route = json!({
        "route": [
            {"destination": {"host": canary.primary_service_name()}, "weight": weights.primary},
            {"destination": {"host": canary.canary_service_name()}, "weight": weights.canary},
        ]
    });
    let extras = [
        ("retries", &svc.retries),
        ("headers", &svc.headers),
        ("corsPolicy", &svc.cors_policy),
        ("rewrite", &svc.rewrite),
    ];
    for (key, value) in extras {
        if let Some(value) = value {
            route[key] = value.clone();
        }
    }
    if let Some(timeout) = &svc.timeout {
        route["timeout"] = json!(timeout);
    }
    if !svc.match_.is_empty() {
        route["match"] = json!(svc.match_);
    }
    let mut spec = json!({"hosts": hosts, "http": [route]});
    if !svc.gateways.is_empty() {
        spec["gateways"] = json!(svc.gateways);
    }
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": name,
            "namespace": canary.namespace(),
            "ownerReferences": owner(canary),
        },
        "spec": spec,
    })
}

/// The DestinationRule for one of the two Services.
pub fn destination_rule(canary: &Canary, host: &str) -> Value {
    let mut spec = json!({"host": host});
    if let Some(policy) = &canary.spec.service.traffic_policy {
        spec["trafficPolicy"] = policy.clone();
    }
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {
            "name": host,
            "namespace": canary.namespace(),
            "ownerReferences": owner(canary),
        },
        "spec": spec,
    })
}

async fn apply(client: &Client, ns: &str, kind: &'static str, object: &Value) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(kind));
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Apply { kind, name, source })
}

impl TrafficRouter for IstioRouter {
    async fn apply(&self, client: &Client, canary: &Canary, weights: Weights) -> Result<()> {
        let ns = canary.namespace().unwrap_or_default();
        for host in [canary.primary_service_name(), canary.canary_service_name()] {
            apply(
                client,
                &ns,
                "DestinationRule",
                &destination_rule(canary, &host),
            )
            .await?;
        }
        apply(
            client,
            &ns,
            "VirtualService",
            &virtual_service(canary, weights),
        )
        .await
    }
}

/// The canary weight the live VirtualService routes, if it exists and has the split.
pub fn canary_weight_of(vs: &DynamicObject, canary_host: &str) -> Option<u32> {
    vs.data["spec"]["http"][0]["route"]
        .as_array()?
        .iter()
        .find(|r| r["destination"]["host"] == canary_host)
        .map(|r| r["weight"].as_u64().unwrap_or(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Canary {
        serde_yaml::from_str(
            r#"
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata: {name: podinfo, namespace: test, uid: "1"}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service:
    port: 9898
    gateways: [public-gateway.istio-system.svc.cluster.local]
    hosts: [app.example.com]
    trafficPolicy: {tls: {mode: DISABLE}}
    retries: {attempts: 3, perTryTimeout: 1s}
  analysis: {interval: 1s, threshold: 2, maxWeight: 50, stepWeight: 10}
"#,
        )
        .unwrap()
    }

    #[test]
    fn the_virtual_service_splits_traffic_between_primary_and_canary_services() {
        let vs = virtual_service(&canary(), Weights::with_canary(30));
        assert_eq!(vs["spec"]["hosts"], json!(["podinfo", "app.example.com"]));
        assert_eq!(
            vs["spec"]["gateways"],
            json!(["public-gateway.istio-system.svc.cluster.local"])
        );
        let route = &vs["spec"]["http"][0];
        assert_eq!(
            route["route"][0],
            json!({"destination": {"host": "podinfo-primary"}, "weight": 70})
        );
        assert_eq!(
            route["route"][1],
            json!({"destination": {"host": "podinfo-canary"}, "weight": 30})
        );
        assert_eq!(route["retries"]["attempts"], 3);
    }

    #[test]
    fn destination_rules_carry_the_traffic_policy() {
        let dr = destination_rule(&canary(), "podinfo-canary");
        assert_eq!(
            dr["spec"],
            json!({"host": "podinfo-canary", "trafficPolicy": {"tls": {"mode": "DISABLE"}}})
        );
    }

    #[test]
    fn weights_always_add_up_to_100() {
        for w in [0, 10, 50, 100, 150] {
            let weights = Weights::with_canary(w);
            assert_eq!(weights.primary + weights.canary, 100);
        }
    }
}
