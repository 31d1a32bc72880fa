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

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Client, ResourceExt};

mod routing;
pub mod users;
mod world;

pub use routing::{ACCEPT_ANNOTATION, CONTROLLER_NAME};

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
    let watched = world::Watched::start(&client, namespace.as_deref());
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
        match world::routes(&client, namespace.as_deref(), &watched).await {
            Ok(routing::Routing { routes, statuses }) => {
                if let Err(e) = world::write_statuses(&client, &statuses).await {
                    tracing::warn!(error = %e, "writing an HTTPRoute's status failed");
                }
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
    use serde_json::json;

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
