//! What the gateways report of an HTTPRoute: whether every parent has accepted its
//! current generation (`status.parents`), read before the controller lets traffic move.

use serde_json::Value;

fn same_parent(written: &Value, reported: &Value, route_namespace: &str) -> bool {
    let or = |v: &Value, default: &str| v.as_str().unwrap_or(default).to_string();
    let group = |v: &Value| {
        let g = or(v, "gateway.networking.k8s.io");
        if g == "core" { String::new() } else { g }
    };
    written["name"] == reported["name"]
        && or(&written["kind"], "Gateway") == or(&reported["kind"], "Gateway")
        && group(&written["group"]) == group(&reported["group"])
        && or(&written["namespace"], route_namespace) == or(&reported["namespace"], route_namespace)
        && written["sectionName"] == reported["sectionName"]
        && written["port"] == reported["port"]
}

/// Whether every parent of the live `route` has accepted its current generation, and
/// if not, why (a sentence for the Canary's condition).
pub fn acceptance(route: &Value) -> Result<(), String> {
    let name = route["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = route["metadata"]["namespace"].as_str().unwrap_or_default();
    let generation = route["metadata"]["generation"].as_i64().unwrap_or(0);
    let empty = Vec::new();
    let reported = route["status"]["parents"].as_array().unwrap_or(&empty);
    for parent in route["spec"]["parentRefs"].as_array().unwrap_or(&empty) {
        let label = format!(
            "{} {}",
            parent["kind"].as_str().unwrap_or("Gateway"),
            parent["name"].as_str().unwrap_or_default()
        );
        let accepted = reported
            .iter()
            .filter(|r| same_parent(parent, &r["parentRef"], namespace))
            .flat_map(|r| r["conditions"].as_array().unwrap_or(&empty))
            .find(|c| c["type"] == "Accepted");
        match accepted {
            None => {
                return Err(format!(
                    "{label} has not accepted HTTPRoute {name} yet (no status from its controller)"
                ));
            }
            Some(c) if c["status"] != "True" => {
                return Err(format!(
                    "{label} does not accept HTTPRoute {name}: {}: {}",
                    c["reason"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                ));
            }
            Some(c) if c["observedGeneration"].as_i64().unwrap_or(0) < generation => {
                return Err(format!(
                    "{label} has not observed generation {generation} of HTTPRoute {name} yet"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Weights;
    use crate::router::gatewayapi::{http_route, tests::north_south};
    use serde_json::json;

    fn live(generation: i64, parents: Value) -> Value {
        let mut route = http_route(&north_south(), Weights::with_canary(10));
        route["metadata"]["generation"] = json!(generation);
        route["status"] = json!({"parents": parents});
        route
    }

    fn reported(status: &str, observed: i64) -> Value {
        json!({
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "istio-ingress"},
            "controllerName": "example.com/gateway",
            "conditions": [{"type": "Accepted", "status": status, "reason": if status == "True" {"Accepted"} else {"NotAllowedByListeners"}, "message": "no listener allows routes from test", "observedGeneration": observed}],
        })
    }

    #[test]
    fn a_route_is_accepted_only_when_every_parent_accepted_its_current_generation() {
        assert_eq!(acceptance(&live(3, json!([reported("True", 3)]))), Ok(()));
        let cases = [
            (
                json!([]),
                "Gateway public has not accepted HTTPRoute podinfo yet",
            ),
            (
                json!([reported("True", 2)]),
                "Gateway public has not observed generation 3",
            ),
            (
                json!([reported("False", 3)]),
                "Gateway public does not accept HTTPRoute podinfo: NotAllowedByListeners: no listener allows routes from test",
            ),
        ];
        for (parents, why) in cases {
            let err = acceptance(&live(3, parents)).unwrap_err();
            assert!(err.starts_with(why), "{err}");
        }
    }
}
