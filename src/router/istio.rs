//! Istio: a VirtualService `<svc>` with one weighted http route to `<svc>-primary` and
//! `<svc>-canary`, and a DestinationRule for each, carrying `service.trafficPolicy`.
//! The objects are written with server-side apply and validated by Istio's real CRD.

use kube::{Resource, ResourceExt, api::DynamicObject};
use serde_json::{Value, json};

use super::{Backends, TrafficRouter, Weights, apex_service, strategy};
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

fn destination(host: String, weight: u32) -> Value {
    json!({"destination": {"host": host}, "weight": weight})
}

/// An http route with the settings of `service` (retries, headers, CORS, rewrite,
/// timeout) and the conditions `matches`, sending `route` its destinations.
fn http_route(canary: &Canary, matches: &[Value], route: Vec<Value>) -> Value {
    let svc = &canary.spec.service;
    let mut http = json!({ "route": route });
    let extras = [
        ("retries", &svc.retries),
        ("headers", &svc.headers),
        ("corsPolicy", &svc.cors_policy),
        ("rewrite", &svc.rewrite),
    ];
    for (key, value) in extras {
        if let Some(value) = value {
            http[key] = value.clone();
        }
    }
    if let Some(timeout) = &svc.timeout {
        http["timeout"] = json!(timeout);
    }
    if !matches.is_empty() {
        http["match"] = json!(matches);
    }
    http
}

/// The http routes for this split, as Flagger's `SetRoutes` builds them:
/// - A/B testing (`analysis.match`): the matching requests split by `weights`, then
///   everyone else to the primary;
/// - session affinity: a route for the holders of the canary's cookie (to the canary),
///   one for the primary's cookie if `primaryCookieName` is set (to the primary), then
///   the weighted route, whose canary destination sets the cookie; at weight 0 the
///   cookie is removed from the users who still send it;
/// - otherwise the weighted route alone; a mirror copies a share to the canary.
fn http_routes(canary: &Canary, weights: Weights) -> Vec<Value> {
    let svc = &canary.spec.service;
    let (primary, canary_host) = (canary.primary_service_name(), canary.canary_service_name());
    let split = || {
        vec![
            destination(primary.clone(), weights.primary),
            destination(canary_host.clone(), weights.canary),
        ]
    };
    let mut weighted = http_route(canary, &svc.match_, split());
    if let Some(percent) = weights.mirror {
        weighted["mirror"] = json!({"host": canary_host});
        weighted["mirrorPercentage"] = json!({"value": f64::from(percent)});
    }
    if !canary.spec.analysis.match_.is_empty() {
        let matching = http_route(canary, &strategy::ab_matches(canary), split());
        let others = http_route(canary, &svc.match_, vec![destination(primary.clone(), 100)]);
        return vec![matching, others];
    }
    let Some(affinity) = strategy::affinity(canary) else {
        return vec![weighted];
    };
    let cookie_match = |cookie: &strategy::Cookie| {
        strategy::merge(
            &[json!({"headers": {strategy::COOKIE_HEADER: {"regex": cookie.regex()}}})],
            &svc.match_,
            &["headers"],
        )
    };
    if weights.canary == 0 {
        // The release ended or has no traffic yet: whoever still holds its cookie goes
        // where everyone goes, and the cookie is removed.
        let mut expire = http_route(canary, &cookie_match(&affinity.canary), split());
        expire["headers"] =
            strategy::with_set_cookie(svc.headers.as_ref(), &affinity.canary.expire());
        return vec![expire, weighted];
    }
    let mut routes = vec![http_route(
        canary,
        &cookie_match(&affinity.canary),
        vec![
            destination(primary.clone(), 0),
            destination(canary_host.clone(), 100),
        ],
    )];
    weighted["route"][1]["headers"] = json!({"response": {"add": {strategy::SET_COOKIE_HEADER: affinity.canary.set(affinity.spec)}}});
    // The primary's cookie pins its users only while both versions serve: during the
    // blue/green switch (weight 100) the primary is being updated.
    if let Some(cookie) = affinity.primary.as_ref().filter(|_| weights.canary < 100) {
        routes.push(http_route(
            canary,
            &cookie_match(cookie),
            vec![
                destination(primary.clone(), 100),
                destination(canary_host.clone(), 0),
            ],
        ));
        weighted["route"][0]["headers"] =
            json!({"response": {"add": {strategy::SET_COOKIE_HEADER: cookie.set(affinity.spec)}}});
    }
    routes.push(weighted);
    routes
}

/// The VirtualService for this split.
pub fn virtual_service(canary: &Canary, weights: Weights) -> Value {
    let svc = &canary.spec.service;
    let name = canary.service_name();
    let mut hosts = vec![name.to_string()];
    hosts.extend(svc.hosts.iter().filter(|h| h.as_str() != name).cloned());
    let mut spec = json!({"hosts": hosts, "http": http_routes(canary, weights)});
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

/// The canary weight the live VirtualService routes, if it exists and has the split:
/// that of its first route with both destinations (the matching route of an A/B test,
/// the weighted route under session affinity, whose sticky routes come first).
pub fn canary_weight_of(vs: &DynamicObject, canary_host: &str) -> Option<u32> {
    let routes = vs.data["spec"]["http"].as_array()?;
    let sticky = |r: &&Value| {
        r["match"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["headers"].get(strategy::COOKIE_HEADER).is_some())
        })
    };
    routes
        .iter()
        .filter(|r| r["route"].as_array().is_some_and(|d| d.len() == 2))
        .find(|r| !sticky(r) || routes.len() == 1)?["route"]
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

    fn with_analysis(extra: &str, status: Option<&str>) -> Canary {
        let status = status
            .map(|r| format!("status: {{phase: Progressing, lastAppliedSpec: {r}}}"))
            .unwrap_or_default();
        serde_yaml::from_str(&format!(
            r#"
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata: {{name: podinfo, namespace: test, uid: "1"}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service:
    port: 9898
    match: [{{uri: {{prefix: /api}}}}]
  analysis: {{interval: 1s, threshold: 2, {extra}}}
{status}
"#
        ))
        .unwrap()
    }

    #[test]
    fn an_ab_test_routes_the_matching_requests_by_the_split_and_the_others_to_the_primary() {
        let c = with_analysis(
            r#"iterations: 3, match: [{headers: {x-canary: {exact: insider}}}, {headers: {cookie: {regex: "^(.*?;)?(canary=always)(;.*)?$"}}}]"#,
            None,
        );
        let vs = virtual_service(&c, Weights::with_canary(100));
        let http = vs["spec"]["http"].as_array().unwrap();
        assert_eq!(http.len(), 2);
        assert_eq!(
            http[0]["match"],
            json!([
                {"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "insider"}}},
                {"uri": {"prefix": "/api"}, "headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}},
            ])
        );
        assert_eq!(
            http[0]["route"],
            json!([
                {"destination": {"host": "podinfo-primary"}, "weight": 0},
                {"destination": {"host": "podinfo-canary"}, "weight": 100},
            ])
        );
        assert_eq!(http[1]["match"], json!([{"uri": {"prefix": "/api"}}]));
        assert_eq!(
            http[1]["route"],
            json!([{"destination": {"host": "podinfo-primary"}, "weight": 100}])
        );
        let live: DynamicObject = serde_json::from_value(vs).unwrap();
        assert_eq!(canary_weight_of(&live, "podinfo-canary"), Some(100));
    }

    #[test]
    fn a_mirror_copies_its_share_to_the_canary() {
        let c = with_analysis("iterations: 3, mirror: true, mirrorWeight: 40", None);
        let vs = virtual_service(&c, Weights::with_canary(0).mirrored(Some(40)));
        let route = &vs["spec"]["http"][0];
        assert_eq!(route["mirror"], json!({"host": "podinfo-canary"}));
        assert_eq!(route["mirrorPercentage"], json!({"value": 40.0}));
        assert_eq!(route["route"][0]["weight"], 100);
        let plain = virtual_service(&c, Weights::with_canary(0));
        assert!(plain["spec"]["http"][0].get("mirror").is_none());
    }

    #[test]
    fn session_affinity_pins_the_users_who_reached_each_version() {
        let c = with_analysis(
            "stepWeight: 10, maxWeight: 50, sessionAffinity: {cookieName: canary-user, primaryCookieName: primary-user, maxAge: 600}",
            Some("0123abcd"),
        );
        let vs = virtual_service(&c, Weights::with_canary(20));
        let http = vs["spec"]["http"].as_array().unwrap();
        assert_eq!(http.len(), 3);
        assert_eq!(
            http[0]["match"],
            json!([{"uri": {"prefix": "/api"}, "headers": {"Cookie": {"regex": ".*canary-user=.*0123abcd.*"}}}])
        );
        assert_eq!(
            http[0]["route"][1],
            json!({"destination": {"host": "podinfo-canary"}, "weight": 100})
        );
        assert_eq!(
            http[1]["match"][0]["headers"]["Cookie"]["regex"],
            ".*primary-user=.*0123abcd.*"
        );
        assert_eq!(
            http[1]["route"][0],
            json!({"destination": {"host": "podinfo-primary"}, "weight": 100})
        );
        let weighted = &http[2];
        assert_eq!(weighted["route"][1]["weight"], 20);
        assert_eq!(
            weighted["route"][1]["headers"]["response"]["add"]["Set-Cookie"],
            "canary-user=0123abcd; Max-Age=600"
        );
        assert_eq!(
            weighted["route"][0]["headers"]["response"]["add"]["Set-Cookie"],
            "primary-user=0123abcd; Max-Age=600"
        );
        let live: DynamicObject = serde_json::from_value(vs).unwrap();
        assert_eq!(canary_weight_of(&live, "podinfo-canary"), Some(20));
        // Once the release ends, the holders of its cookie lose it.
        let ended = virtual_service(&c, Weights::with_canary(0));
        let http = ended["spec"]["http"].as_array().unwrap();
        assert_eq!(http.len(), 2);
        assert_eq!(
            http[0]["headers"]["response"]["add"]["Set-Cookie"],
            "canary-user=0123abcd; Max-Age=-1"
        );
        assert_eq!(http[0]["route"][0]["weight"], 100);
        // Without a release under analysis there is no cookie to give.
        let idle = with_analysis("stepWeight: 10, sessionAffinity: {cookieName: c}", None);
        assert_eq!(
            virtual_service(&idle, Weights::with_canary(0))["spec"]["http"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
