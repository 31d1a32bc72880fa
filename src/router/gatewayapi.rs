//! Gateway API: an HTTPRoute `<svc>` attached to the parents in `service.gatewayRefs`
//! (Gateways for north-south traffic; with none given, the apex Service itself, as
//! GAMMA meshes such as Linkerd and Istio ambient route east-west traffic), with one rule
//! whose weighted `backendRefs` are `<svc>-primary` and `<svc>-canary`. The `linkerd`
//! provider is this router. The objects are validated by the real Gateway API CRDs.
//!
//! A route is only programmed once its parents accept it: [`acceptance`] reads the
//! route's `status.parents` so that the controller holds progress until they have.

use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{Backends, TrafficRouter, Weights, apex_service, strategy};
use crate::api::Canary;

mod status;
pub use status::acceptance;

pub struct GatewayApiRouter;

pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";

fn owner(canary: &Canary) -> Value {
    json!(
        canary
            .controller_owner_ref(&())
            .map(|o| vec![o])
            .unwrap_or_default()
    )
}

/// The parents the route attaches to: `service.gatewayRefs`, or the apex Service.
pub fn parent_refs(canary: &Canary) -> Vec<Value> {
    let svc = &canary.spec.service;
    if svc.gateway_refs.is_empty() {
        return vec![json!({
            "group": "",
            "kind": "Service",
            "name": canary.service_name(),
            "port": svc.port,
        })];
    }
    svc.gateway_refs
        .iter()
        .map(|p| {
            let mut parent = json!({"name": p.name});
            let group = p.group.as_deref().map(|g| if g == "core" { "" } else { g });
            let fields = [
                ("group", group.map(|g| json!(g))),
                ("kind", p.kind.as_ref().map(|k| json!(k))),
                ("namespace", p.namespace.as_ref().map(|n| json!(n))),
                ("sectionName", p.section_name.as_ref().map(|s| json!(s))),
                ("port", p.port.map(|p| json!(p))),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    parent[key] = value;
                }
            }
            parent
        })
        .collect()
}

/// Whether `parent` (a ParentReference as written in a route) names a Service.
fn is_service(parent: &Value) -> bool {
    parent["kind"] == "Service"
}

/// Istio-style header operations (`{request: {set, add, remove}}`) as a Gateway API
/// RequestHeaderModifier filter.
fn header_filter(headers: &Value) -> Option<Value> {
    let request = headers.get("request")?;
    let pairs = |key: &str| -> Vec<Value> {
        request[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, value)| json!({"name": name, "value": value.as_str().unwrap_or_default()}))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut modifier = json!({});
    for key in ["set", "add"] {
        let list = pairs(key);
        if !list.is_empty() {
            modifier[key] = json!(list);
        }
    }
    if let Some(remove) = request["remove"].as_array().filter(|r| !r.is_empty()) {
        modifier["remove"] = json!(remove);
    }
    (modifier.as_object().is_some_and(|m| !m.is_empty()))
        .then(|| json!({"type": "RequestHeaderModifier", "requestHeaderModifier": modifier}))
}

/// Istio-style rewrites (`{uri, authority}`) as a URLRewrite filter: the authority
/// becomes the hostname, the uri a full path replacement.
fn rewrite_filter(rewrite: &Value) -> Option<Value> {
    let mut url = json!({});
    if let Some(host) = rewrite["authority"].as_str() {
        url["hostname"] = json!(host);
    }
    if let Some(uri) = rewrite["uri"].as_str() {
        url["path"] = json!({"type": "ReplaceFullPath", "replaceFullPath": uri});
    }
    (url.as_object().is_some_and(|m| !m.is_empty()))
        .then(|| json!({"type": "URLRewrite", "urlRewrite": url}))
}

/// Istio StringMatch `{exact|prefix|regex}` as a Gateway API match type and value
/// (a prefix becomes an anchored regular expression: Gateway API has no header prefix).
fn string_match(m: &Value) -> Option<(&'static str, String)> {
    if let Some(v) = m["exact"].as_str() {
        return Some(("Exact", v.to_string()));
    }
    if let Some(v) = m["regex"].as_str() {
        return Some(("RegularExpression", v.to_string()));
    }
    let prefix = m["prefix"].as_str()?;
    let escaped: String = prefix
        .chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect();
    Some(("RegularExpression", format!("^{escaped}.*")))
}

/// Istio HTTPMatchRequests (`service.match`, `analysis.match`) as Gateway API
/// HTTPRouteMatches: headers, query parameters, the uri as the path, the method.
pub fn route_matches(matches: &[Value]) -> Vec<Value> {
    matches
        .iter()
        .filter_map(|m| {
            let mut out = json!({});
            let pairs = |key: &str| -> Vec<Value> {
                m[key]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter_map(|(name, v)| {
                                let (kind, value) = string_match(v)?;
                                Some(json!({"name": name, "type": kind, "value": value}))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for (from, to) in [("headers", "headers"), ("queryParams", "queryParams")] {
                let list = pairs(from);
                if !list.is_empty() {
                    out[to] = json!(list);
                }
            }
            let uri = &m["uri"];
            let path = [
                ("exact", "Exact"),
                ("prefix", "PathPrefix"),
                ("regex", "RegularExpression"),
            ]
            .into_iter()
            .find_map(|(k, t)| uri[k].as_str().map(|v| json!({"type": t, "value": v})));
            if let Some(path) = path {
                out["path"] = path;
            }
            if let Some(method) = m["method"]["exact"].as_str() {
                out["method"] = json!(method);
            }
            out.as_object()
                .is_some_and(|o| !o.is_empty())
                .then_some(out)
        })
        .collect()
}

fn response_cookie(value: String) -> Value {
    json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": strategy::SET_COOKIE_HEADER, "value": value}]}}])
}

/// The rules for this split, as Flagger's `SetRoutes` builds them: the weighted rule
/// (with a `RequestMirror` filter while mirroring); for A/B testing its matches are the
/// A/B conditions and a second rule sends everyone else to the primary; with session
/// affinity sticky rules for the cookie holders come first and the canary's backend
/// sets the cookie.
fn rules(canary: &Canary, weights: Weights) -> Vec<Value> {
    let svc = &canary.spec.service;
    let (primary, canary_svc) = (canary.primary_service_name(), canary.canary_service_name());
    let backend = |name: &str, weight: u32| json!({"group": "", "kind": "Service", "name": name, "port": svc.port, "weight": weight});
    let matches = route_matches(&svc.match_);
    let filters: Vec<Value> = [
        svc.headers.as_ref().and_then(header_filter),
        svc.rewrite.as_ref().and_then(rewrite_filter),
    ]
    .into_iter()
    .flatten()
    .collect();
    let rule = |matches: &[Value], backends: Vec<Value>| {
        let mut rule = json!({ "backendRefs": backends });
        if !matches.is_empty() {
            rule["matches"] = json!(matches);
        }
        if !filters.is_empty() {
            rule["filters"] = json!(filters);
        }
        if let Some(timeout) = &svc.timeout {
            rule["timeouts"] = json!({"request": timeout});
        }
        rule
    };
    let split = || {
        vec![
            backend(&primary, weights.primary),
            backend(&canary_svc, weights.canary),
        ]
    };
    let mut weighted = rule(&matches, split());
    if let Some(percent) = weights.mirror {
        let mut mirror = json!({"backendRef": {"group": "", "kind": "Service", "name": canary_svc, "port": svc.port}});
        if percent < 100 {
            mirror["percent"] = json!(percent);
        }
        let mut list = weighted["filters"].as_array().cloned().unwrap_or_default();
        list.push(json!({"type": "RequestMirror", "requestMirror": mirror}));
        weighted["filters"] = json!(list);
    }
    if !canary.spec.analysis.match_.is_empty() {
        let ab = strategy::merge(
            &route_matches(&canary.spec.analysis.match_),
            &matches,
            &["headers", "queryParams"],
        );
        weighted["matches"] = json!(ab);
        return vec![weighted, rule(&matches, vec![backend(&primary, 100)])];
    }
    let Some(affinity) = strategy::affinity(canary) else {
        return vec![weighted];
    };
    let cookie_match = |cookie: &strategy::Cookie| {
        strategy::merge(
            &[
                json!({"headers": [{"name": strategy::COOKIE_HEADER, "type": "RegularExpression", "value": cookie.regex()}]}),
            ],
            &matches,
            &["headers"],
        )
    };
    if weights.canary == 0 {
        let mut expire = rule(&cookie_match(&affinity.canary), split());
        let mut list = expire["filters"].as_array().cloned().unwrap_or_default();
        list.extend(
            response_cookie(affinity.canary.expire())
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        expire["filters"] = json!(list);
        return vec![expire, weighted];
    }
    let mut rules = vec![rule(
        &cookie_match(&affinity.canary),
        vec![backend(&primary, 0), backend(&canary_svc, 100)],
    )];
    weighted["backendRefs"][1]["filters"] = response_cookie(affinity.canary.set(affinity.spec));
    if let Some(cookie) = affinity.primary.as_ref().filter(|_| weights.canary < 100) {
        rules.push(rule(
            &cookie_match(cookie),
            vec![backend(&primary, 100), backend(&canary_svc, 0)],
        ));
        weighted["backendRefs"][0]["filters"] = response_cookie(cookie.set(affinity.spec));
    }
    rules.push(weighted);
    rules
}

/// The HTTPRoute for this split.
pub fn http_route(canary: &Canary, weights: Weights) -> Value {
    let svc = &canary.spec.service;
    let parents = parent_refs(canary);
    let mut spec = json!({"parentRefs": parents, "rules": rules(canary, weights)});
    // Hostnames only mean something to Gateways; a Service parent routes its own name.
    if !svc.hosts.is_empty() && !parents.iter().all(is_service) {
        spec["hostnames"] = json!(svc.hosts);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {
            "name": canary.service_name(),
            "namespace": canary.namespace(),
            "ownerReferences": owner(canary),
        },
        "spec": spec,
    })
}

impl TrafficRouter for GatewayApiRouter {
    fn desired(&self, canary: &Canary, backends: &Backends, weights: Weights) -> Vec<Value> {
        vec![
            apex_service(canary, &backends.primary, true),
            http_route(canary, weights),
        ]
    }

    fn revert(&self, canary: &Canary, backends: &Backends) -> Vec<Value> {
        vec![
            apex_service(canary, &backends.canary, false),
            http_route(canary, Weights::with_canary(100)),
        ]
    }
}

/// The canary weight the live HTTPRoute routes, if it exists and has the split: that
/// of its first rule with both backends that is not a sticky (cookie) rule.
pub fn canary_weight_of(route: &Value, canary_service: &str) -> Option<u32> {
    let rules = route["spec"]["rules"].as_array()?;
    let sticky = |r: &&Value| {
        r["matches"].as_array().is_some_and(|m| {
            m.iter().any(|m| {
                m["headers"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h["name"] == strategy::COOKIE_HEADER))
            })
        })
    };
    rules
        .iter()
        .filter(|r| r["backendRefs"].as_array().is_some_and(|b| b.len() == 2))
        .find(|r| !sticky(r) || rules.len() == 1)?["backendRefs"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == canary_service)
        .map(|r| r["weight"].as_u64().unwrap_or(1) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(service: &str) -> Canary {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata: {{name: podinfo, namespace: test, uid: "1"}}
spec:
  provider: gatewayapi:v1beta1
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service:
{service}
  analysis: {{interval: 1s, threshold: 2, maxWeight: 50, stepWeight: 10}}
"#
        ))
        .unwrap()
    }

    pub(super) fn north_south() -> Canary {
        canary(
            r#"    port: 9898
    hosts: [app.example.com]
    timeout: 15s
    gatewayRefs: [{name: public, namespace: istio-ingress}]
    headers: {request: {set: {x-env: prod}, remove: [x-debug]}}
    rewrite: {uri: /api}"#,
        )
    }

    #[test]
    fn the_route_splits_traffic_between_primary_and_canary_services_behind_the_gateways() {
        let route = http_route(&north_south(), Weights::with_canary(30));
        assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            route["spec"]["parentRefs"],
            json!([{"name": "public", "namespace": "istio-ingress"}])
        );
        assert_eq!(route["spec"]["hostnames"], json!(["app.example.com"]));
        let rule = &route["spec"]["rules"][0];
        assert_eq!(
            rule["backendRefs"],
            json!([
                {"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 70},
                {"group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898, "weight": 30},
            ])
        );
        assert_eq!(rule["timeouts"], json!({"request": "15s"}));
        assert_eq!(
            rule["filters"],
            json!([
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-env", "value": "prod"}], "remove": ["x-debug"]}},
                {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/api"}}},
            ])
        );
        assert_eq!(canary_weight_of(&route, "podinfo-canary"), Some(30));
    }

    #[test]
    fn without_gateway_refs_the_route_attaches_to_the_apex_service() {
        let route = http_route(
            &canary("    port: 9898\n    hosts: [app.example.com]"),
            Weights::with_canary(0),
        );
        assert_eq!(
            route["spec"]["parentRefs"],
            json!([{"group": "", "kind": "Service", "name": "podinfo", "port": 9898}])
        );
        assert!(route["spec"].get("hostnames").is_none());
        assert!(route["spec"]["rules"][0].get("filters").is_none());
    }

    #[test]
    fn the_router_owns_the_apex_service_and_reverts_to_the_target() {
        let backends = Backends {
            primary: [("app".to_string(), "podinfo-primary".to_string())].into(),
            canary: [("app".to_string(), "podinfo".to_string())].into(),
        };
        let objects = GatewayApiRouter.desired(&north_south(), &backends, Weights::with_canary(10));
        assert_eq!(objects[0]["kind"], "Service");
        assert_eq!(
            objects[0]["spec"]["selector"],
            json!({"app": "podinfo-primary"})
        );
        assert_eq!(objects[1]["kind"], "HTTPRoute");
        let reverted = GatewayApiRouter.revert(&north_south(), &backends);
        assert_eq!(reverted[0]["spec"]["selector"], json!({"app": "podinfo"}));
        assert_eq!(canary_weight_of(&reverted[1], "podinfo-canary"), Some(100));
    }

    fn with_analysis(extra: &str, status: Option<&str>) -> Canary {
        let mut c = canary(
            "    port: 9898\n    gatewayRefs: [{name: public, namespace: istio-ingress}]\n    match: [{uri: {prefix: /api}}]",
        );
        let analysis: serde_json::Value =
            serde_yaml::from_str(&format!("{{interval: 1s, threshold: 2, {extra}}}")).unwrap();
        c.spec.analysis = serde_json::from_value(analysis).unwrap();
        if let Some(revision) = status {
            c.status = Some(crate::api::CanaryStatus {
                last_applied_spec: Some(revision.to_string()),
                ..Default::default()
            });
        }
        c
    }

    #[test]
    fn an_ab_test_gets_a_rule_for_the_matching_requests_and_one_for_the_others() {
        let c = with_analysis(
            "iterations: 3, match: [{headers: {x-canary: {exact: insider}, x-team: {prefix: web.}, cookie: {regex: \"canary=always\"}}}]",
            None,
        );
        let route = http_route(&c, Weights::with_canary(100));
        let rules = route["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["matches"],
            json!([{
                "path": {"type": "PathPrefix", "value": "/api"},
                "headers": [
                    {"name": "cookie", "type": "RegularExpression", "value": "canary=always"},
                    {"name": "x-canary", "type": "Exact", "value": "insider"},
                    {"name": "x-team", "type": "RegularExpression", "value": "^web\\..*"},
                ],
            }])
        );
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 100);
        assert_eq!(
            rules[1]["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/api"}}])
        );
        assert_eq!(
            rules[1]["backendRefs"],
            json!([{"group": "", "kind": "Service", "name": "podinfo-primary", "port": 9898, "weight": 100}])
        );
        assert_eq!(canary_weight_of(&route, "podinfo-canary"), Some(100));
    }

    #[test]
    fn a_mirror_is_a_request_mirror_filter_to_the_canary() {
        let c = with_analysis("iterations: 3, mirror: true, mirrorWeight: 25", None);
        let route = http_route(&c, Weights::with_canary(0).mirrored(Some(25)));
        assert_eq!(
            route["spec"]["rules"][0]["filters"],
            json!([{"type": "RequestMirror", "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898}, "percent": 25}}])
        );
        let all = http_route(&c, Weights::with_canary(0).mirrored(Some(100)));
        assert!(
            all["spec"]["rules"][0]["filters"][0]["requestMirror"]
                .get("percent")
                .is_none()
        );
    }

    #[test]
    fn session_affinity_is_a_sticky_rule_and_a_cookie_from_the_canary_backend() {
        let c = with_analysis(
            "stepWeight: 10, sessionAffinity: {cookieName: canary-user, primaryCookieName: primary-user}",
            Some("0123abcd"),
        );
        let route = http_route(&c, Weights::with_canary(30));
        let rules = route["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[0]["matches"][0]["headers"],
            json!([{"name": "Cookie", "type": "RegularExpression", "value": ".*canary-user=.*0123abcd.*"}])
        );
        assert_eq!(rules[0]["matches"][0]["path"]["value"], "/api");
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 100);
        assert_eq!(rules[1]["backendRefs"][0]["weight"], 100);
        assert_eq!(
            rules[2]["backendRefs"][1]["filters"],
            json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "Set-Cookie", "value": "canary-user=0123abcd; Max-Age=86400"}]}}])
        );
        assert_eq!(canary_weight_of(&route, "podinfo-canary"), Some(30));
    }
}
