//! The traffic simulator used by the end-to-end tests and the demo. It stands in for
//! the mesh's data plane: it reads the live route weights from the API server, sends a
//! fixed request rate through them, and exports each mesh's own request metrics for the
//! workloads that served the requests, for the real Prometheus to scrape.
//!
//! How a workload behaves is set on its pod template, so that a release carries its
//! behaviour with it (and the primary inherits it on promotion):
//! `sim.serin.dev/error-rate` (fraction of 5xx, default 0) and
//! `sim.serin.dev/latency-ms` (median latency, default 20; log-normal spread).
//! The same annotations on the Deployment itself (its metadata, not its pod template)
//! override them for the pods it runs now without making a new revision: a release that
//! degrades while it runs (the chaos run flips a good canary's error rate this way).
//!
//! Requests come from simulated users, `rps` of them per route, each sending one request
//! a second. A share of them is tagged (`--tagged-share`): they carry the header
//! `--user-header` and the cookie `--user-cookie` that A/B conditions look for. Users
//! keep the cookies the routes set (session affinity). The routes are read whole: each
//! request takes the first rule whose conditions it matches (headers and cookies; other
//! conditions are taken as met), is split by that rule's weights, and is copied to its
//! mirror if it has one. Mirrored copies reach the canary's metrics (the analysis
//! judges them) but are not user requests.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

use crate::api::{Canary, CanaryPhase, Provider};
use crate::rollout::plan::is_blue_green;

pub mod users;

pub use users::{Route, UserConfig};

pub const ERROR_RATE_ANNOTATION: &str = "sim.serin.dev/error-rate";
pub const LATENCY_ANNOTATION: &str = "sim.serin.dev/latency-ms";

/// Istio's default request-duration buckets (milliseconds).
const ISTIO_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Spread of the log-normal latency: p99 is about 2.5 times the median.
const LATENCY_SIGMA: f64 = 0.4;

/// The `workload` label of requests routed to a Service that selects no Deployment.
pub const NO_WORKLOAD: &str = "<none>";

/// How a workload answers, read from its pod template annotations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Behaviour {
    pub error_rate: f64,
    pub median_latency_ms: f64,
}

impl Behaviour {
    pub fn of(deployment: &Deployment) -> Behaviour {
        let mut annotations = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        // The Deployment's own annotations override its pod template's.
        for key in [ERROR_RATE_ANNOTATION, LATENCY_ANNOTATION] {
            if let Some(value) = deployment.annotations().get(key) {
                annotations.insert(key.to_string(), value.clone());
            }
        }
        let number = |key: &str, default: f64| {
            annotations
                .get(key)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(default)
        };
        Behaviour {
            error_rate: number(ERROR_RATE_ANNOTATION, 0.0).clamp(0.0, 1.0),
            median_latency_ms: number(LATENCY_ANNOTATION, 20.0).max(0.1),
        }
    }
}

/// One destination of one route: which workload serves what share.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    pub namespace: String,
    pub service_host: String,
    pub service_name: String,
    pub workload: String,
    pub weight: u32,
    pub ready_replicas: i32,
    pub behaviour: Behaviour,
}

/// The labels a destination sidecar puts on a request: who served it, through which
/// Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Served {
    namespace: String,
    workload: String,
    service_host: String,
    service_name: String,
}

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Series {
    requests: BTreeMap<(Served, u16), u64>,
    durations: BTreeMap<Served, Histogram>,
    unready: BTreeMap<(String, String, String), u64>,
    /// User requests by (namespace, service, workload, tagged).
    users: BTreeMap<(String, String, String, bool), u64>,
    /// Mirrored copies by (namespace, service, workload).
    mirrored: BTreeMap<(String, String, String), u64>,
    /// Users moved from the canary back to the primary, by (namespace, route).
    switches: BTreeMap<(String, String), u64>,
}

/// The exported counters, shared between the traffic loop and the HTTP endpoint.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Series>>);

impl Metrics {
    /// Records one second of `route`'s traffic: the requests its users sent (and the
    /// mirrored copies) in each mesh's series, and the users' own series.
    pub fn record_tick(&self, route: &Route, tick: &users::Tick, rng: &mut Rng) {
        for (dest, n, _) in &tick.served {
            self.record(dest, *n, rng);
        }
        for (dest, n) in &tick.mirrored {
            self.record(dest, *n, rng);
        }
        let mut series = self.0.lock().expect("metrics lock");
        for (dest, n, tagged) in tick.served.iter().filter(|_| route.users) {
            let key = |t: bool| {
                (
                    dest.namespace.clone(),
                    dest.service_name.clone(),
                    dest.workload.clone(),
                    t,
                )
            };
            for (t, count) in [(true, *tagged), (false, n - tagged)] {
                if count > 0 {
                    *series.users.entry(key(t)).or_default() += count;
                }
            }
        }
        for (dest, n) in &tick.mirrored {
            *series
                .mirrored
                .entry((
                    dest.namespace.clone(),
                    dest.service_name.clone(),
                    dest.workload.clone(),
                ))
                .or_default() += n;
        }
        if route.users {
            let (ns, name) = route.key.split_once('/').unwrap_or(("", &route.key));
            // Always exported for a route with users, so that 0 reads as measured.
            *series
                .switches
                .entry((ns.to_string(), name.to_string()))
                .or_default() += tick.switches;
        }
    }

    /// Records one tick of `requests` requests sent to `dest`.
    pub fn record(&self, dest: &Destination, requests: u64, rng: &mut Rng) {
        let mut series = self.0.lock().expect("metrics lock");
        if dest.ready_replicas < 1 {
            *series
                .unready
                .entry((
                    dest.namespace.clone(),
                    dest.service_name.clone(),
                    dest.workload.clone(),
                ))
                .or_default() += requests;
            return;
        }
        let mut errors = 0;
        let served = Served {
            namespace: dest.namespace.clone(),
            workload: dest.workload.clone(),
            service_host: dest.service_host.clone(),
            service_name: dest.service_name.clone(),
        };
        let histogram = series
            .durations
            .entry(served.clone())
            .or_insert_with(|| Histogram {
                buckets: vec![0; ISTIO_BUCKETS.len()],
                ..Default::default()
            });
        for _ in 0..requests {
            if rng.uniform() < dest.behaviour.error_rate {
                errors += 1;
            }
            let latency = dest.behaviour.median_latency_ms * (LATENCY_SIGMA * rng.normal()).exp();
            for (i, le) in ISTIO_BUCKETS.iter().enumerate() {
                if latency <= *le {
                    histogram.buckets[i] += 1;
                }
            }
            histogram.sum += latency;
            histogram.count += 1;
        }
        for (code, n) in [(200u16, requests - errors), (500u16, errors)] {
            *series.requests.entry((served.clone(), code)).or_default() += n;
        }
    }

    /// The Prometheus text exposition of everything recorded so far, with Istio's metric
    /// names and labels (as reported by the destination's sidecar) and Linkerd's.
    pub fn render(&self) -> String {
        let series = self.0.lock().expect("metrics lock");
        let mut out = String::new();
        out.push_str("# TYPE istio_requests_total counter\n");
        for ((served, code), n) in &series.requests {
            let Served {
                namespace: ns,
                workload,
                service_host: host,
                service_name: svc,
            } = served;
            let _ = writeln!(
                out,
                "istio_requests_total{{reporter=\"destination\",source_workload=\"trafficsim\",destination_workload=\"{workload}\",destination_workload_namespace=\"{ns}\",destination_service=\"{host}\",destination_service_name=\"{svc}\",destination_service_namespace=\"{ns}\",response_code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        for (
            served,
            Histogram {
                buckets,
                sum,
                count,
            },
        ) in &series.durations
        {
            let Served {
                namespace: ns,
                workload,
                service_host: host,
                service_name: svc,
            } = served;
            let labels = format!(
                "reporter=\"destination\",source_workload=\"trafficsim\",destination_workload=\"{workload}\",destination_workload_namespace=\"{ns}\",destination_service=\"{host}\",destination_service_name=\"{svc}\",destination_service_namespace=\"{ns}\""
            );
            for (le, n) in ISTIO_BUCKETS.iter().zip(buckets) {
                let _ = writeln!(
                    out,
                    "istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "istio_request_duration_milliseconds_count{{{labels}}} {count}"
            );
        }
        out.push_str("# TYPE linkerd_response_total counter\n");
        for (
            (
                Served {
                    namespace: ns,
                    workload,
                    service_host: host,
                    ..
                },
                code,
            ),
            n,
        ) in &series.requests
        {
            let class = if *code >= 500 { "failure" } else { "success" };
            let _ = writeln!(
                out,
                "response_total{{direction=\"inbound\",namespace=\"{ns}\",deployment=\"{workload}\",authority=\"{host}\",classification=\"{class}\",status_code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# TYPE response_latency_ms histogram\n");
        for (
            Served {
                namespace: ns,
                workload,
                service_host: host,
                ..
            },
            Histogram {
                buckets,
                sum,
                count,
            },
        ) in &series.durations
        {
            let labels = format!(
                "direction=\"inbound\",namespace=\"{ns}\",deployment=\"{workload}\",authority=\"{host}\""
            );
            for (le, n) in ISTIO_BUCKETS.iter().zip(buckets) {
                let _ = writeln!(
                    out,
                    "response_latency_ms_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "response_latency_ms_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(out, "response_latency_ms_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "response_latency_ms_count{{{labels}}} {count}");
        }
        out.push_str(
            "# HELP serin_sim_unready_requests_total Requests the routes sent to a backend with no ready pods.\n# TYPE serin_sim_unready_requests_total counter\n",
        );
        for ((ns, svc, workload), n) in &series.unready {
            let _ = writeln!(
                out,
                "serin_sim_unready_requests_total{{namespace=\"{ns}\",service=\"{svc}\",workload=\"{workload}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP serin_sim_user_requests_total Requests simulated users sent, by the Service that served them and whether the user carried the A/B header or cookie.\n# TYPE serin_sim_user_requests_total counter\n",
        );
        for ((ns, svc, workload, tagged), n) in &series.users {
            let _ = writeln!(
                out,
                "serin_sim_user_requests_total{{namespace=\"{ns}\",service=\"{svc}\",workload=\"{workload}\",tagged=\"{tagged}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP serin_sim_mirrored_requests_total Copies of requests mirrored to a Service (not served to users).\n# TYPE serin_sim_mirrored_requests_total counter\n",
        );
        for ((ns, svc, workload), n) in &series.mirrored {
            let _ = writeln!(
                out,
                "serin_sim_mirrored_requests_total{{namespace=\"{ns}\",service=\"{svc}\",workload=\"{workload}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP serin_sim_user_switches_total Users served by the canary and then by the primary while a session affinity rule kept the canary's users on it.\n# TYPE serin_sim_user_switches_total counter\n",
        );
        for ((ns, route), n) in &series.switches {
            let _ = writeln!(
                out,
                "serin_sim_user_switches_total{{namespace=\"{ns}\",route=\"{route}\"}} {n}"
            );
        }
        out
    }
}

/// A small deterministic generator (xorshift64*), enough for simulated traffic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Scramble the seed (splitmix64): xorshift started from a small state gives
        // tiny numbers for its first dozens of draws, which would read as errors.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Splits a route's weights into whole requests per tick so that the shares add up to
/// exactly `rps` over time (the remainder is carried by the largest share).
pub fn split_requests(rps: u64, weights: &[u32]) -> Vec<u64> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut shares: Vec<u64> = weights
        .iter()
        .map(|w| rps * u64::from(*w) / total)
        .collect();
    let given: u64 = shares.iter().sum();
    if let Some((i, _)) = weights.iter().enumerate().max_by_key(|(_, w)| **w) {
        shares[i] += rps - given;
    }
    shares
}

fn service_name_of(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// The Deployment the Service `svc_name` in `ns` selects, as a weighted destination; a
/// Service that does not exist or selects no workload gives a destination with no ready
/// pods, since the requests it gets reach no pod.
fn resolve(
    ns: &str,
    host: &str,
    weight: u32,
    services: &[Service],
    deployments: &[Deployment],
) -> Destination {
    let svc_name = service_name_of(host).to_string();
    let selector = services
        .iter()
        .find(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == svc_name)
        .and_then(|s| s.spec.as_ref()?.selector.clone())
        .unwrap_or_default();
    let deployment = deployments.iter().find(|d| {
        d.namespace().as_deref() == Some(ns)
            && !selector.is_empty()
            && d.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref()?.labels.as_ref())
                .is_some_and(|labels| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
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
            service_name: svc_name,
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
            service_name: svc_name,
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

fn api_for(client: &Client, namespace: Option<&str>, resource: &ApiResource) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// The controller name the simulator reports in the routes it accepts.
pub const CONTROLLER_NAME: &str = "serin.dev/trafficsim";

/// A Gateway annotated with this set to "false" rejects the routes attached to it.
pub const ACCEPT_ANNOTATION: &str = "sim.serin.dev/accept";

/// Whether the simulated gateway (or mesh, for a Service parent) accepts a route
/// attached to `parent`: the parent must exist, and a Gateway must not be annotated
/// `sim.serin.dev/accept: "false"`. `Err` gives the reason and message.
fn accepts(
    parent: &Value,
    ns: &str,
    services: &[Service],
    gateways: &[DynamicObject],
) -> Result<(), (&'static str, String)> {
    let name = parent["name"].as_str().unwrap_or_default();
    let parent_ns = parent["namespace"].as_str().unwrap_or(ns);
    if parent["kind"] == "Service" {
        return services
            .iter()
            .any(|s| s.namespace().as_deref() == Some(parent_ns) && s.name_any() == name)
            .then_some(())
            .ok_or((
                "NoMatchingParent",
                format!("Service {parent_ns}/{name} does not exist"),
            ));
    }
    let gateway = gateways
        .iter()
        .find(|g| g.namespace().as_deref() == Some(parent_ns) && g.name_any() == name)
        .ok_or((
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
pub fn route_status(
    route: &DynamicObject,
    services: &[Service],
    gateways: &[DynamicObject],
    now: &str,
) -> (Value, bool) {
    let ns = route.namespace().unwrap_or_default();
    let generation = route.metadata.generation.unwrap_or(0);
    let mut any = false;
    let empty = Vec::new();
    let parents: Vec<Value> = route.data["spec"]["parentRefs"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|parent| {
            let (status, reason, message) = match accepts(parent, &ns, services, gateways) {
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

/// Reads the live VirtualServices and HTTPRoutes, whole, and resolves each destination
/// to the Deployment its Service selects. HTTPRoutes are first marked accepted (or not)
/// in their `status.parents`, as a gateway controller does; only accepted ones carry
/// traffic.
pub async fn routes(client: &Client, namespace: Option<&str>) -> kube::Result<Vec<Route>> {
    let vs_resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "networking.istio.io",
        "v1",
        "VirtualService",
    ));
    let route_resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ));
    let gateway_resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
    ));
    let (services, deployments): (Api<Service>, Api<Deployment>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // One consistent snapshot: the Deployments are read first (a quorum read), and every
    // other list at exactly their resourceVersion. Lists read one after another at
    // different moments could pair a route written after a pod became ready with the
    // Deployment read before it, and count requests to "unready" pods that no real mesh
    // would have sent there.
    let deployments = deployments.list(&ListParams::default()).await?;
    let lp = match deployments.metadata.resource_version.as_deref() {
        Some(rv) if !rv.is_empty() => ListParams::default()
            .at(rv)
            .matching(kube::api::VersionMatch::Exact),
        _ => ListParams::default(),
    };
    let deployments = deployments.items;
    let services = services.list(&lp).await?.items;
    let mut routes = Vec::new();
    for vs in api_for(client, namespace, &vs_resource)
        .list(&lp)
        .await?
        .items
    {
        let ns = vs.namespace().unwrap_or_default();
        let rules = users::virtual_service_rules(&vs.data["spec"], |host, weight| {
            resolve(&ns, host, weight, &services, &deployments)
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
    let canaries: Api<Canary> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    for canary in canaries.list(&lp).await?.items {
        let ns = canary.namespace().unwrap_or_default();
        let status = canary.status.clone().unwrap_or_default();
        if canary.provider() == Provider::Kubernetes
            && services.iter().any(|s| {
                s.namespace().as_deref() == Some(&ns) && s.name_any() == canary.service_name()
            })
        {
            routes.push(Route::weighted(
                format!("{ns}/{}", canary.service_name()),
                vec![resolve(
                    &ns,
                    canary.service_name(),
                    100,
                    &services,
                    &deployments,
                )],
                true,
            ));
        }
        if is_blue_green(&canary)
            && matches!(
                status.phase,
                CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
            )
            && status.canary_weight == 0
        {
            let load = resolve(
                &ns,
                &canary.canary_service_name(),
                100,
                &services,
                &deployments,
            );
            if load.ready_replicas > 0 {
                routes.push(Route::weighted(
                    format!("{ns}/{}", canary.canary_service_name()),
                    vec![load],
                    false,
                ));
            }
        }
    }
    let http_routes = api_for(client, namespace, &route_resource);
    let gateways = api_for(client, None, &gateway_resource)
        .list(&lp)
        .await?
        .items;
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_default()
        .to_string();
    for route in http_routes.list(&lp).await?.items {
        let ns = route.namespace().unwrap_or_default();
        let (status, accepted) = route_status(&route, &services, &gateways, &now);
        if without_times(&route.data["status"]) != without_times(&status) {
            let routes_ns: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &route_resource);
            routes_ns
                .patch_status(
                    &route.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await?;
        }
        if !accepted {
            continue;
        }
        let rules = users::http_route_rules(&route.data["spec"], |host, weight| {
            resolve(&ns, host, weight, &services, &deployments)
        });
        if !rules.is_empty() {
            routes.push(Route {
                key: format!("{ns}/{}", route.name_any()),
                rules,
                users: true,
            });
        }
    }
    Ok(routes)
}

/// Sends one request a second from each of the `rps` users of every route until the
/// task is dropped; each route keeps its users (and their cookies) while it exists.
pub async fn run_traffic(
    client: Client,
    namespace: Option<String>,
    rps: u64,
    metrics: Metrics,
    seed: u64,
    config: UserConfig,
    pause_file: Option<std::path::PathBuf>,
) {
    let mut rng = Rng::new(seed);
    // Who gets which destination is drawn from its own sequence, so that the errors and
    // latencies a seed gives do not depend on how many users there are.
    let mut draws = Rng::new(seed ^ 0x005E_ED0F_05E5);
    let mut crowds: BTreeMap<String, Vec<users::User>> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        // While the pause file exists the users send nothing: a test changes the world
        // between two rounds (say, makes pods unready) and lets the controller react
        // before the users look again, so the invariants judge the controller's
        // decisions, not how fast the machine runs it.
        if pause_file.as_deref().is_some_and(std::path::Path::exists) {
            continue;
        }
        match routes(&client, namespace.as_deref()).await {
            Ok(routes) => {
                crowds.retain(|key, _| routes.iter().any(|r| &r.key == key));
                for route in routes {
                    let crowd = crowds
                        .entry(route.key.clone())
                        .or_insert_with(|| users::crowd(rps, &config));
                    let served = users::serve(&route, crowd, &config, &mut draws);
                    metrics.record_tick(&route, &served, &mut rng);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading routes failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canary of podinfo in namespace `test`.
    fn canary_destination(weight: u32, ready_replicas: i32, error_rate: f64) -> Destination {
        Destination {
            namespace: "test".into(),
            service_host: "podinfo-canary.test.svc.cluster.local".into(),
            service_name: "podinfo-canary".into(),
            workload: "podinfo".into(),
            weight,
            ready_replicas,
            behaviour: Behaviour {
                error_rate,
                median_latency_ms: 20.0,
            },
        }
    }

    #[test]
    fn a_deployment_annotation_overrides_its_pod_templates_behaviour() {
        let mut deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "podinfo"},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": {
                ERROR_RATE_ANNOTATION: "0.001", LATENCY_ANNOTATION: "40"
            }}}}
        }))
        .unwrap();
        assert_eq!(Behaviour::of(&deployment).error_rate, 0.001);
        deployment
            .annotations_mut()
            .insert(ERROR_RATE_ANNOTATION.to_string(), "0.2".to_string());
        let behaviour = Behaviour::of(&deployment);
        assert_eq!(behaviour.error_rate, 0.2, "the running pods turned bad");
        assert_eq!(
            behaviour.median_latency_ms, 40.0,
            "the rest is the template's"
        );
    }

    #[test]
    fn requests_are_split_by_weight_and_add_up_to_the_rate() {
        assert_eq!(split_requests(100, &[90, 10]), vec![90, 10]);
        assert_eq!(split_requests(10, &[67, 33]), vec![7, 3]);
        assert_eq!(split_requests(100, &[100, 0]), vec![100, 0]);
        assert_eq!(split_requests(100, &[0, 0]), vec![0, 0]);
    }

    #[test]
    fn a_workload_with_errors_exports_5xx_in_istio_and_linkerd_series() {
        let metrics = Metrics::default();
        let dest = canary_destination(100, 1, 1.0);
        metrics.record(&dest, 10, &mut Rng::new(7));
        let text = metrics.render();
        assert!(text.contains(r#"destination_workload="podinfo",destination_workload_namespace="test",destination_service="podinfo-canary.test.svc.cluster.local",destination_service_name="podinfo-canary",destination_service_namespace="test",response_code="500"} 10"#), "{text}");
        assert!(text.contains(r#"response_total{direction="inbound",namespace="test",deployment="podinfo",authority="podinfo-canary.test.svc.cluster.local",classification="failure",status_code="500"} 10"#), "{text}");
        assert!(text.contains(r#"response_latency_ms_bucket{direction="inbound",namespace="test",deployment="podinfo",authority="podinfo-canary.test.svc.cluster.local",le="+Inf"} 10"#), "{text}");
        assert!(text.contains(r#"le="+Inf"} 10"#), "{text}");
    }

    #[test]
    fn traffic_to_a_backend_without_ready_pods_is_counted_as_a_violation() {
        let metrics = Metrics::default();
        let dest = canary_destination(10, 0, 0.0);
        metrics.record(&dest, 5, &mut Rng::new(7));
        assert!(metrics.render().contains(
            r#"serin_sim_unready_requests_total{namespace="test",service="podinfo-canary",workload="podinfo"} 5"#
        ));
    }

    #[test]
    fn the_first_draws_of_a_small_seed_are_uniform() {
        let mut rng = Rng::new(1);
        let errors = (0..1000).filter(|_| rng.uniform() < 0.01).count();
        assert!(
            errors < 25,
            "{errors} of the first 1000 draws fell below 0.01"
        );
    }

    #[test]
    fn latency_has_the_configured_median() {
        let mut rng = Rng::new(42);
        let mut samples: Vec<f64> = (0..10_001)
            .map(|_| 100.0 * (LATENCY_SIGMA * rng.normal()).exp())
            .collect();
        samples.sort_by(f64::total_cmp);
        let median = samples[5000];
        assert!((median - 100.0).abs() < 3.0, "median {median}");
    }
}
