//! The routes a world makes: each destination resolved to the Deployment its Service
//! selects, and the HTTPRoutes judged accepted or not, as a gateway controller would.
//! Pure: [`super::world`] reads the objects, this module makes the routes of them.

use std::collections::HashMap;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{Resource, ResourceExt, api::DynamicObject};
use serde_json::{Value, json};

use super::{Behaviour, Destination, NO_WORKLOAD, Route, users, world::World};
use crate::api::{CanaryPhase, Provider};
use crate::rollout::plan::is_blue_green;

/// The controller name the simulator reports in the routes it accepts.
pub const CONTROLLER_NAME: &str = "serin.dev/trafficsim";

/// A Gateway annotated with this set to "false" rejects the routes attached to it.
pub const ACCEPT_ANNOTATION: &str = "sim.serin.dev/accept";

/// An HTTPRoute whose `status` should read differently: the simulator is its gateway.
pub struct StatusUpdate {
    pub namespace: String,
    pub name: String,
    pub status: Value,
}

/// The routes the world makes, and the HTTPRoute statuses to write.
pub struct Routing {
    pub routes: Vec<Route>,
    pub statuses: Vec<StatusUpdate>,
}

impl Routing {
    /// Some request would reach a backend without ready pods: a destination or a
    /// mirror with a share of the requests and no ready replica.
    pub fn reaches_unready(&self) -> bool {
        self.routes.iter().flat_map(|r| &r.rules).any(|rule| {
            rule.dests
                .iter()
                .any(|d| d.weight > 0 && d.ready_replicas < 1)
                || rule
                    .mirror
                    .as_ref()
                    .is_some_and(|(d, percent)| *percent > 0 && d.ready_replicas < 1)
        })
    }
}

/// Lookups into a world by namespace and name, and Deployments by their pods' labels.
struct Index<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    /// Deployments by (namespace, label, value) of their pod template, in the world's
    /// order: a selector's matches are among the Deployments of each of its pairs.
    deployments: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Deployment>>,
    gateways: HashMap<(&'a str, &'a str), &'a DynamicObject>,
}

fn pod_labels(d: &Deployment) -> Option<&std::collections::BTreeMap<String, String>> {
    d.spec.as_ref()?.template.metadata.as_ref()?.labels.as_ref()
}

fn key<K: Resource>(object: &K) -> (&str, &str) {
    let meta = object.meta();
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

impl<'a> Index<'a> {
    fn of(world: &'a World) -> Index<'a> {
        let mut deployments: HashMap<_, Vec<&Deployment>> = HashMap::new();
        for d in &world.deployments {
            let ns = key(d.as_ref()).0;
            for (k, v) in pod_labels(d).into_iter().flatten() {
                deployments
                    .entry((ns, k.as_str(), v.as_str()))
                    .or_default()
                    .push(d);
            }
        }
        Index {
            services: world
                .services
                .iter()
                .map(|s| (key(s.as_ref()), s.as_ref()))
                .collect(),
            deployments,
            gateways: world
                .gateways
                .iter()
                .map(|g| (key(g.as_ref()), g.as_ref()))
                .collect(),
        }
    }

    /// The Deployment the Service of `host` in `ns` selects, as a weighted destination;
    /// a Service that does not exist or selects no workload gives a destination with no
    /// ready pods, since the requests it gets reach no pod.
    fn resolve(&self, ns: &str, host: &str, weight: u32) -> Destination {
        let svc_name = host.split('.').next().unwrap_or(host);
        let selector = self
            .services
            .get(&(ns, svc_name))
            .and_then(|s| s.spec.as_ref()?.selector.as_ref())
            .filter(|selector| !selector.is_empty());
        let deployment = selector.and_then(|selector| {
            let candidates = selector
                .iter()
                .map(|(k, v)| self.deployments.get(&(ns, k.as_str(), v.as_str())))
                .min_by_key(|c| c.map_or(0, Vec::len))??;
            candidates.iter().copied().find(|d| {
                pod_labels(d)
                    .is_some_and(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            })
        });
        let service_host = if host.contains('.') {
            host.to_string()
        } else {
            format!("{host}.{ns}.svc.cluster.local")
        };
        match deployment {
            None => Destination {
                namespace: ns.to_string(),
                service_host,
                service_name: svc_name.to_string(),
                workload: NO_WORKLOAD.to_string(),
                weight,
                ready_replicas: 0,
                behaviour: Behaviour {
                    error_rate: 1.0,
                    median_latency_ms: 0.0,
                },
            },
            Some(deployment) => Destination {
                namespace: ns.to_string(),
                service_host,
                service_name: svc_name.to_string(),
                workload: deployment.name_any(),
                weight,
                ready_replicas: deployment
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
                behaviour: Behaviour::of(deployment),
            },
        }
    }

    fn has_service(&self, ns: &str, name: &str) -> bool {
        self.services.contains_key(&(ns, name))
    }

    /// Whether the simulated gateway (or mesh, for a Service parent) accepts a route
    /// attached to `parent`: the parent must exist, and a Gateway must not be annotated
    /// `sim.serin.dev/accept: "false"`. `Err` gives the reason and message.
    fn accepts(&self, parent: &Value, ns: &str) -> Result<(), (&'static str, String)> {
        let name = parent["name"].as_str().unwrap_or_default();
        let parent_ns = parent["namespace"].as_str().unwrap_or(ns);
        if parent["kind"] == "Service" {
            return self.has_service(parent_ns, name).then_some(()).ok_or((
                "NoMatchingParent",
                format!("Service {parent_ns}/{name} does not exist"),
            ));
        }
        let gateway = self.gateways.get(&(parent_ns, name)).ok_or((
            "NoMatchingParent",
            format!("Gateway {parent_ns}/{name} does not exist"),
        ))?;
        if gateway
            .annotations()
            .get(ACCEPT_ANNOTATION)
            .map(String::as_str)
            == Some("false")
        {
            return Err((
                "NotAllowedByListeners",
                format!("Gateway {parent_ns}/{name} does not allow this route"),
            ));
        }
        Ok(())
    }

    /// The `status.parents` a gateway controller reports for `route`, and whether any
    /// parent accepted it.
    fn route_status(&self, route: &DynamicObject, now: &str) -> (Value, bool) {
        let ns = route.metadata.namespace.as_deref().unwrap_or_default();
        let generation = route.metadata.generation.unwrap_or(0);
        let mut any = false;
        let empty = Vec::new();
        let parents: Vec<Value> = route.data["spec"]["parentRefs"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|parent| {
                let (status, reason, message) = match self.accepts(parent, ns) {
                    Ok(()) => {
                        any = true;
                        ("True", "Accepted", "accepted by the traffic simulator".to_string())
                    }
                    Err((reason, message)) => ("False", reason, message),
                };
                let condition = |type_: &str, status: &str, reason: &str, message: &str| {
                    json!({"type": type_, "status": status, "reason": reason, "message": message, "observedGeneration": generation, "lastTransitionTime": now})
                };
                json!({
                    "parentRef": parent,
                    "controllerName": CONTROLLER_NAME,
                    "conditions": [
                        condition("Accepted", status, reason, &message),
                        condition("ResolvedRefs", "True", "ResolvedRefs", "all references resolved"),
                    ],
                })
            })
            .collect();
        (json!({"parents": parents}), any)
    }
}

/// The status as reported, without the transition times (to compare with what is live).
fn without_times(status: &Value) -> Value {
    let mut status = status.clone();
    if let Some(parents) = status["parents"].as_array_mut() {
        for p in parents {
            if let Some(conditions) = p["conditions"].as_array_mut() {
                for c in conditions {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("lastTransitionTime");
                    }
                }
            }
        }
    }
    status
}

/// The routes of `world`, each destination resolved to the Deployment its Service
/// selects. HTTPRoutes are first judged accepted (or not) as a gateway controller does;
/// only accepted ones carry traffic, and those whose `status.parents` say otherwise are
/// returned to be written.
pub fn routing(world: &World) -> Routing {
    let index = Index::of(world);
    let mut routes = Vec::new();
    for vs in &world.virtual_services {
        let ns = vs.metadata.namespace.as_deref().unwrap_or_default();
        let rules = users::virtual_service_rules(&vs.data["spec"], |host, weight| {
            index.resolve(ns, host, weight)
        });
        if !rules.is_empty() {
            routes.push(Route {
                key: format!("{ns}/{}", vs.name_any()),
                rules,
                users: true,
            });
        }
    }
    // Without a mesh users reach the pods the apex Service selects (blue/green with
    // `provider: kubernetes`); during a blue/green analysis a load tester sends requests
    // to the canary Service once it has ready pods.
    for canary in &world.canaries {
        let ns = canary.metadata.namespace.as_deref().unwrap_or_default();
        let status = canary.status.clone().unwrap_or_default();
        if canary.provider() == Provider::Kubernetes && index.has_service(ns, canary.service_name())
        {
            routes.push(Route::weighted(
                format!("{ns}/{}", canary.service_name()),
                vec![index.resolve(ns, canary.service_name(), 100)],
                true,
            ));
        }
        if is_blue_green(canary)
            && matches!(
                status.phase,
                CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
            )
            && status.canary_weight == 0
        {
            let load = index.resolve(ns, &canary.canary_service_name(), 100);
            if load.ready_replicas > 0 {
                routes.push(Route::weighted(
                    format!("{ns}/{}", canary.canary_service_name()),
                    vec![load],
                    false,
                ));
            }
        }
    }
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_default()
        .to_string();
    let mut statuses = Vec::new();
    for route in &world.http_routes {
        let ns = route.metadata.namespace.as_deref().unwrap_or_default();
        let (status, accepted) = index.route_status(route, &now);
        if without_times(&route.data["status"]) != without_times(&status) {
            statuses.push(StatusUpdate {
                namespace: ns.to_string(),
                name: route.name_any(),
                status,
            });
        }
        if !accepted {
            continue;
        }
        let rules = users::http_route_rules(&route.data["spec"], |host, weight| {
            index.resolve(ns, host, weight)
        });
        if !rules.is_empty() {
            routes.push(Route {
                key: format!("{ns}/{}", route.name_any()),
                rules,
                users: true,
            });
        }
    }
    Routing { routes, statuses }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kube::core::ApiResource;

    use super::super::world::{http_route, virtual_service};
    use super::*;

    fn deployment(name: &str, app: &str, ready: i32) -> Arc<Deployment> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "test"},
                "spec": {
                    "selector": {"matchLabels": {"app": app}},
                    "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": []}},
                },
                "status": {"readyReplicas": ready},
            }))
            .expect("deployment"),
        )
    }

    fn service(name: &str, app: &str) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "test"},
                "spec": {"selector": {"app": app}},
            }))
            .expect("service"),
        )
    }

    fn dynamic(resource: &ApiResource, name: &str, spec: Value) -> Arc<DynamicObject> {
        let mut object = DynamicObject::new(name, resource).within("test");
        object.data = json!({"spec": spec});
        Arc::new(object)
    }

    /// podinfo's primary (2 ready) and canary (`canary_ready`), their Services, and a
    /// VirtualService sending `canary_weight` percent to the canary.
    fn world(canary_weight: u32, canary_ready: i32) -> World {
        World {
            deployments: vec![
                deployment("podinfo-primary", "podinfo-primary", 2),
                deployment("podinfo", "podinfo", canary_ready),
            ],
            services: vec![
                service("podinfo-primary", "podinfo-primary"),
                service("podinfo-canary", "podinfo"),
            ],
            virtual_services: vec![dynamic(
                &virtual_service(),
                "podinfo",
                json!({"hosts": ["podinfo"], "http": [{"route": [
                    {"destination": {"host": "podinfo-primary"}, "weight": 100 - canary_weight},
                    {"destination": {"host": "podinfo-canary"}, "weight": canary_weight},
                ]}]}),
            )],
            ..World::default()
        }
    }

    #[test]
    fn each_destination_of_a_route_is_the_deployment_its_service_selects() {
        let routing = routing(&world(10, 1));
        let dests: Vec<(String, u32, i32)> = routing.routes[0].rules[0]
            .dests
            .iter()
            .map(|d| (d.workload.clone(), d.weight, d.ready_replicas))
            .collect();
        assert_eq!(
            dests,
            vec![
                ("podinfo-primary".to_string(), 90, 2),
                ("podinfo".to_string(), 10, 1)
            ]
        );
        assert!(!routing.reaches_unready());
    }

    #[test]
    fn a_service_reaches_the_deployment_with_every_label_of_its_selector() {
        let labelled = |name: &str, labels: Value, ready: i32| {
            let mut d = Arc::unwrap_or_clone(deployment(name, "x", ready));
            let template = &mut d.spec.as_mut().expect("spec").template;
            template.metadata.as_mut().expect("metadata").labels =
                serde_json::from_value(labels).expect("labels");
            Arc::new(d)
        };
        let mut world = world(0, 1);
        world.deployments = vec![
            labelled("other", json!({"team": "a", "app": "other"}), 3),
            labelled("podinfo", json!({"team": "a", "app": "podinfo"}), 1),
            labelled("podinfo-primary", json!({"app": "podinfo-primary"}), 2),
        ];
        world.services = vec![
            service("podinfo-primary", "podinfo-primary"),
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": "podinfo-canary", "namespace": "test"},
                    "spec": {"selector": {"team": "a", "app": "podinfo"}},
                }))
                .expect("service"),
            ),
        ];
        let routing = routing(&world);
        let workloads: Vec<&str> = routing.routes[0].rules[0]
            .dests
            .iter()
            .map(|d| d.workload.as_str())
            .collect();
        assert_eq!(workloads, vec!["podinfo-primary", "podinfo"]);
    }

    #[test]
    fn a_share_of_traffic_to_a_backend_without_ready_pods_is_noticed() {
        assert!(routing(&world(10, 0)).reaches_unready());
    }

    #[test]
    fn a_backend_without_ready_pods_and_no_share_of_traffic_is_not_reached() {
        assert!(!routing(&world(0, 0)).reaches_unready());
    }

    #[test]
    fn an_http_route_attached_to_a_missing_gateway_carries_no_traffic_and_says_why() {
        let mut world = world(0, 1);
        world.virtual_services.clear();
        world.http_routes = vec![dynamic(
            &http_route(),
            "podinfo",
            json!({
                "parentRefs": [{"name": "public"}],
                "rules": [{"backendRefs": [{"name": "podinfo-primary", "port": 80, "weight": 100}]}],
            }),
        )];
        let routing = routing(&world);
        assert!(routing.routes.is_empty());
        assert_eq!(routing.statuses.len(), 1);
        let condition = &routing.statuses[0].status["parents"][0]["conditions"][0];
        assert_eq!(condition["reason"], "NoMatchingParent");
        assert_eq!(condition["message"], "Gateway test/public does not exist");
    }
}
