//! Istio: a VirtualService `<svc>` with one weighted http route to `<svc>-primary` and
//! `<svc>-canary`, and a DestinationRule for each, carrying `service.trafficPolicy`.
//! The objects are written with server-side apply and validated by Istio's real CRD.

use kube::{Resource, ResourceExt, api::DynamicObject};
use serde_json::{Value, json};

use super::{Backends, TrafficRouter, Weights, apex_service};
use crate::api::Canary;

pub struct IstioRouter;

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

impl TrafficRouter for IstioRouter {
    fn desired(&self, canary: &Canary, backends: &Backends, weights: Weights) -> Vec<Value> {
        vec![
            apex_service(canary, &backends.primary, true),
            destination_rule(canary, &canary.primary_service_name()),
            destination_rule(canary, &canary.canary_service_name()),
            virtual_service(canary, weights),
        ]
    }

    fn revert(&self, canary: &Canary, backends: &Backends) -> Vec<Value> {
        vec![
            apex_service(canary, &backends.canary, false),
            virtual_service(canary, Weights::with_canary(100)),
        ]
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

    fn backends() -> Backends {
        Backends {
            primary: [("app".to_string(), "podinfo-primary".to_string())].into(),
            canary: [("app".to_string(), "podinfo".to_string())].into(),
        }
    }

    #[test]
    fn the_router_owns_the_apex_service_which_selects_the_primary() {
        let objects = IstioRouter.desired(&canary(), &backends(), Weights::with_canary(10));
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Service",
                "DestinationRule",
                "DestinationRule",
                "VirtualService"
            ]
        );
        assert_eq!(objects[0]["metadata"]["name"], "podinfo");
        assert_eq!(
            objects[0]["spec"]["selector"],
            json!({"app": "podinfo-primary"})
        );
    }

    #[test]
    fn reverting_gives_the_apex_service_to_the_target_and_lets_it_outlive_the_canary() {
        let objects = IstioRouter.revert(&canary(), &backends());
        assert_eq!(objects[0]["spec"]["selector"], json!({"app": "podinfo"}));
        assert!(objects[0]["metadata"].get("ownerReferences").is_none());
        assert_eq!(objects[1]["spec"]["http"][0]["route"][1]["weight"], 100);
    }
}
