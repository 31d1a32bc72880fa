//! No mesh: blue/green by switching the apex Service `<svc>`. It selects the primary's
//! pods, and the canary's only while all traffic goes to the canary (the switch of a
//! blue/green promotion, while the primary is updated behind it). There is no partial
//! split without a mesh, so any weight below 100 keeps users on the primary.

use serde_json::Value;

use super::{Backends, TrafficRouter, Weights, apex_service};
use crate::api::Canary;

pub struct KubernetesRouter;

impl TrafficRouter for KubernetesRouter {
    fn desired(&self, canary: &Canary, backends: &Backends, weights: Weights) -> Vec<Value> {
        let selector = if weights.canary >= 100 {
            &backends.canary
        } else {
            &backends.primary
        };
        vec![apex_service(canary, selector, true)]
    }

    fn revert(&self, canary: &Canary, backends: &Backends) -> Vec<Value> {
        vec![apex_service(canary, &backends.canary, false)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_apex_service_selects_the_canary_only_when_it_gets_everything() {
        let canary: Canary = serde_yaml::from_str(
            r#"
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata: {name: podinfo, namespace: test, uid: "1"}
spec:
  provider: kubernetes
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis: {interval: 1s, threshold: 2, iterations: 3}
"#,
        )
        .unwrap();
        let backends = Backends {
            primary: [("app".to_string(), "podinfo-primary".to_string())].into(),
            canary: [("app".to_string(), "podinfo".to_string())].into(),
        };
        for (weight, app) in [
            (0, "podinfo-primary"),
            (50, "podinfo-primary"),
            (100, "podinfo"),
        ] {
            let objects =
                KubernetesRouter.desired(&canary, &backends, Weights::with_canary(weight));
            assert_eq!(objects.len(), 1);
            assert_eq!(
                objects[0]["spec"]["selector"],
                json!({"app": app}),
                "weight {weight}"
            );
        }
    }
}
