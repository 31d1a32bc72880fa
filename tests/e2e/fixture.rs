//! A rollout under test: one namespace with its own serin controller and traffic
//! simulator (as child processes), the podinfo sample app, and helpers that read what a
//! user would see: the Canary's status and events, the VirtualService weights, the
//! Deployments.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, events::v1::Event};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use serin::api::{Canary, CanaryPhase};
use tokio::process::{Child, Command};

use crate::harness::{Env, eventually};

/// A child process killed when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

/// The address of a controller's /metrics, from its log (the last start's).
pub fn metrics_address(log: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        l.contains("serving /metrics")
            .then(|| l.rsplit("address=").next())?
            .map(|a| a.trim().to_string())
    })
}

impl Process {
    /// How many reconciles this controller has run, from its own
    /// `serin_reconcile_duration_seconds` histogram (its /metrics address is in its log).
    pub async fn reconciles(&self) -> u64 {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let addr = metrics_address(&text).expect("the controller logs its metrics address");
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("serin_reconcile_duration_seconds_count "))
            .and_then(|n| n.trim().parse().ok())
            .expect("serin_reconcile_duration_seconds_count is exported")
    }

    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn spawn(name: &str, ns: &str, program: &str, args: &[&str]) -> Process {
    let env = Env::get();
    let log = env.dir.join("logs").join(format!("{name}-{ns}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let child = Command::new(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    Process { child, log }
}

pub struct Rollout {
    pub client: Client,
    pub ns: String,
    pub env: Env,
    pub serin: Option<Process>,
    pub _sim: Process,
    pub started: Instant,
    /// Arguments added to `serin run` by [`Rollout::start_controller`].
    pub controller_args: Vec<String>,
}

impl Drop for Rollout {
    /// Reports the controller's memory at the end of each scenario (read, not asserted).
    fn drop(&mut self) {
        let pid = self.serin.as_ref().and_then(|p| p.child.id());
        let rss = pid
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
            });
        if let Some(kib) = rss {
            println!("serin controller RSS in {}: {kib} KiB", self.ns);
        }
    }
}

pub const IMAGE: &str = "ghcr.io/stefanprodan/podinfo";

/// How long what a recorded decision implies (routes, replicas, events) may take to
/// show: the rest of the reconcile that recorded it.
const REFLECTED: Duration = Duration::from_secs(10);

impl Rollout {
    /// Starts a controller and a simulator (100 requests a second) for `ns`.
    pub async fn start(client: Client, ns: &str) -> Rollout {
        Rollout::start_with_rps(client, ns, 100).await
    }

    /// Starts a controller and a simulator sending `rps` requests a second.
    pub async fn start_with_rps(client: Client, ns: &str, rps: u32) -> Rollout {
        let mut rollout = Rollout::start_without_controller(client, ns, rps);
        rollout.start_controller();
        rollout
    }

    /// Starts only the simulator; the test starts the controllers it needs.
    pub fn start_without_controller(client: Client, ns: &str, rps: u32) -> Rollout {
        Rollout::start_with_sim_args(client, ns, rps, &[])
    }

    /// Starts only the simulator, with `sim_args` added (e.g. its simulated users'
    /// `--user-header` and `--tagged-share`).
    pub fn start_with_sim_args(client: Client, ns: &str, rps: u32, sim_args: &[&str]) -> Rollout {
        let env = Env::get();
        let rps = rps.to_string();
        let pause = pause_file(&env, ns);
        let mut args = vec![
            "--namespace",
            ns,
            "--rps",
            &rps,
            "--targets-dir",
            env.prometheus_targets.to_str().unwrap(),
            "--pause-file",
            pause.to_str().unwrap(),
        ];
        args.extend_from_slice(sim_args);
        let sim = spawn(
            "trafficsim",
            ns,
            env!("CARGO_BIN_EXE_serin-trafficsim"),
            &args,
        );
        Rollout {
            client,
            ns: ns.to_string(),
            env,
            serin: None,
            _sim: sim,
            started: Instant::now(),
            controller_args: Vec::new(),
        }
    }

    pub fn start_controller(&mut self) {
        let identity = format!("serin-{}", self.ns);
        let extra: Vec<&str> = self.controller_args.iter().map(String::as_str).collect();
        self.serin = Some(self.spawn_controller(&identity, &extra));
    }

    /// Restarts the controller with `args` added to `serin run`.
    pub async fn restart_controller_with(&mut self, args: &[&str]) {
        self.kill_controller().await;
        self.controller_args = args.iter().map(|a| a.to_string()).collect();
        self.start_controller();
    }

    /// The whole controller log (every start, since they append to one file).
    pub fn controller_log_full(&self) -> String {
        let log = self
            .env
            .dir
            .join("logs")
            .join(format!("serin-{}.log", self.ns));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// Starts a controller process for this namespace (one replica), with `extra`
    /// arguments; its log is `serin-<identity>.log`.
    pub fn spawn_controller(&self, identity: &str, extra: &[&str]) -> Process {
        let mut args = vec![
            "run",
            "--namespace",
            &self.ns,
            "--metrics-server",
            &self.env.prometheus_url,
            "--listen",
            "127.0.0.1:0",
            "--leader-elect-identity",
            identity,
        ];
        args.extend_from_slice(extra);
        let name = if identity == format!("serin-{}", self.ns) {
            "serin".to_string()
        } else {
            format!("serin-{identity}")
        };
        spawn(&name, &self.ns, env!("CARGO_BIN_EXE_serin"), &args)
    }

    /// SIGKILL, as the OOM killer or a node failure would.
    pub async fn kill_controller(&mut self) {
        if let Some(mut p) = self.serin.take() {
            p.child.start_kill().unwrap();
            p.child.wait().await.unwrap();
        }
    }

    pub fn controller_log(&self) -> String {
        self.serin.as_ref().map(Process::tail).unwrap_or_default()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub async fn apply(&self, manager: &str, object: &Value) {
        let gvk: GroupVersionKind = GroupVersionKind::try_from(&kube::api::TypeMeta {
            api_version: object["apiVersion"].as_str().unwrap().into(),
            kind: object["kind"].as_str().unwrap().into(),
        })
        .unwrap();
        let plural = match gvk.kind.as_str() {
            "Canary" => "canaries".to_string(),
            kind => format!("{}s", kind.to_lowercase()),
        };
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &resource);
        let name = object["metadata"]["name"].as_str().unwrap();
        api.patch(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
    }

    /// The podinfo Deployment as a GitOps tool would apply it.
    pub async fn apply_app(&self, manager: &str, tag: &str, error_rate: f64, latency_ms: f64) {
        self.apply(manager, &podinfo(tag, error_rate, latency_ms, None))
            .await;
    }

    pub async fn canary(&self) -> Canary {
        Api::<Canary>::namespaced(self.client.clone(), &self.ns)
            .get("podinfo")
            .await
            .unwrap()
    }

    /// The Canary's `status.message` ("" if none).
    pub async fn status_message(&self) -> String {
        self.canary()
            .await
            .status
            .and_then(|s| s.message)
            .unwrap_or_default()
    }

    pub async fn deployment(&self, name: &str) -> Deployment {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns)
            .get(name)
            .await
            .unwrap()
    }

    /// Applies podinfo `tag` (healthy) mounting the ConfigMap `config`.
    pub async fn apply_app_with_config(&self, tag: &str, config: &str) {
        self.apply(
            "kustomize-controller",
            &podinfo(tag, 0.001, 40.0, Some(config)),
        )
        .await;
    }

    /// The live HTTPRoute `podinfo`.
    pub async fn http_route(&self) -> Option<DynamicObject> {
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &ApiResource::from_gvk(&gvk));
        api.get_opt("podinfo").await.ok()?
    }

    /// The (primary, canary) weights of the live route `podinfo`: the VirtualService,
    /// or the HTTPRoute for the Gateway API providers.
    pub async fn vs_weights(&self) -> Option<(u64, u64)> {
        let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &ApiResource::from_gvk(&gvk));
        let Some(vs) = api.get_opt("podinfo").await.ok()? else {
            let route = self.http_route().await?;
            let cookie = |r: &&Value| {
                r["matches"][0]["headers"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h["name"] == "Cookie"))
            };
            let rules = route.data["spec"]["rules"].as_array()?;
            let backends = rules.iter().find(|r| !cookie(r)).or(rules.first())?["backendRefs"]
                .as_array()?
                .clone();
            let weight = |name: &str| {
                backends
                    .iter()
                    .find(|b| b["name"] == name)
                    .and_then(|b| b["weight"].as_u64())
            };
            return Some((weight("podinfo-primary")?, weight("podinfo-canary")?));
        };
        // The weighted route: the first that is not a session affinity route (which
        // matches the cookie the weighted route sets).
        let sticky = |r: &&Value| r["match"][0]["headers"].get("Cookie").is_some();
        let http = vs.data["spec"]["http"].as_array()?;
        let route = http.iter().find(|r| !sticky(r)).or(http.first())?["route"]
            .as_array()?
            .clone();
        let weight = |host: &str| {
            route
                .iter()
                .find(|r| r["destination"]["host"] == host)
                .and_then(|r| r["weight"].as_u64())
        };
        Some((weight("podinfo-primary")?, weight("podinfo-canary")?))
    }

    /// Waits (a few seconds at most) for the VirtualService to route `expected`
    /// (primary, canary). A decision is recorded in status first and reflected in the
    /// routes by the same reconcile, so a test that saw the phase change waits for them.
    pub async fn await_weights(&self, expected: (u64, u64), why: &str) {
        eventually(why, REFLECTED, || async {
            match self.vs_weights().await {
                Some(w) if w == expected => Ok(()),
                other => Err(format!("routes {other:?}, expected {expected:?}")),
            }
        })
        .await;
    }

    /// Waits (a few seconds at most) for Deployment `name` to ask for `replicas`.
    pub async fn await_replicas(&self, name: &str, replicas: i32, why: &str) {
        eventually(why, REFLECTED, || async {
            match Rollout::replicas(&self.deployment(name).await) {
                n if n == replicas => Ok(()),
                n => Err(format!("{name} has {n} replicas, expected {replicas}")),
            }
        })
        .await;
    }

    /// Waits (a few seconds at most) for an event with `reason` on the Canary.
    pub async fn await_event(&self, reason: &str) -> Vec<(String, String, String)> {
        eventually(&format!("a {reason} event"), REFLECTED, || async {
            let events = self.events().await;
            if events.iter().any(|(_, r, _)| r == reason) {
                Ok(events)
            } else {
                Err(format!("events so far: {events:?}"))
            }
        })
        .await
    }

    /// Waits for the Canary to reach `phase`, and reports the controller's log if not.
    pub async fn await_phase(&self, phase: CanaryPhase, timeout: Duration) -> Canary {
        let what = format!("phase {phase}");
        let result = tokio::time::timeout(
            timeout + Duration::from_secs(1),
            eventually(&what, timeout, || async {
                let c = self.canary().await;
                let status = c.status.clone().unwrap_or_default();
                if status.phase == phase {
                    Ok(c)
                } else {
                    Err(format!(
                        "phase {} weight {} failed checks {} message {:?}",
                        status.phase, status.canary_weight, status.failed_checks, status.message
                    ))
                }
            }),
        )
        .await;
        match result {
            Ok(c) => c,
            Err(_) => panic!(
                "timed out waiting for {what}; controller log:\n{}",
                self.controller_log()
            ),
        }
    }

    /// Polls the VirtualService until the Canary reaches `until`, recording each
    /// distinct canary weight seen (in order).
    pub async fn record_weights_until(&self, until: CanaryPhase, timeout: Duration) -> Vec<u64> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<u64> = Vec::new();
        loop {
            if let Some((primary, canary)) = self.vs_weights().await {
                assert_eq!(primary + canary, 100, "weights always add up to 100");
                if seen.last() != Some(&canary) {
                    seen.push(canary);
                }
            }
            let phase = self.canary().await.status.unwrap_or_default().phase;
            if phase == until {
                return seen;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {until}; phase {phase}, weights seen {seen:?}; controller log:\n{}",
                    self.controller_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Events recorded on the Canary, as `(type, reason, note)`.
    pub async fn events(&self) -> Vec<(String, String, String)> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut events = api.list(&ListParams::default()).await.unwrap().items;
        events.retain(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Canary"));
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        events
            .into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub fn replicas(d: &Deployment) -> i32 {
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1)
    }

    pub fn image(d: &Deployment) -> String {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap_or_default()
    }
}

/// The file whose existence pauses the simulated users of namespace `ns`.
fn pause_file(env: &Env, ns: &str) -> std::path::PathBuf {
    env.dir.join(format!("sim-paused-{ns}"))
}

/// The podinfo Deployment; `config` mounts that ConfigMap.
pub fn podinfo(tag: &str, error_rate: f64, latency_ms: f64, config: Option<&str>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "podinfo", "labels": {"app": "podinfo"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {
                    "labels": {"app": "podinfo"},
                    "annotations": {
                        "sim.serin.dev/error-rate": error_rate.to_string(),
                        "sim.serin.dev/latency-ms": latency_ms.to_string()
                    }
                },
                "spec": {"containers": [{"name": "podinfod", "image": format!("{IMAGE}:{tag}"), "ports": [{"containerPort": 9898}]}]}
            }
        }
    });
    if let Some(cm) = config {
        d["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "config", "configMap": {"name": cm}}]);
        d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "config", "mountPath": "/etc/podinfo"}]);
    }
    d
}

/// The Canary of the tests: 1s steps of 10 up to 50, Istio's builtin metrics over 5s.
pub fn canary_spec(threshold: u32) -> Value {
    json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": "podinfo"},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898, "targetPort": 9898},
            "analysis": {
                "interval": "1s", "threshold": threshold, "maxWeight": 50, "stepWeight": 10,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "5s"},
                    {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "5s"}
                ]
            }
        }
    })
}

/// A Prometheus of one test's own, scraping the same simulator targets as the cluster's,
/// so that the test can stop it.
pub struct Prometheus {
    process: Option<Process>,
    port: u16,
}

impl Prometheus {
    pub fn start(ns: &str) -> Prometheus {
        let env = Env::get();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = env.dir.join(format!("prometheus-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: trafficsim\n    file_sd_configs:\n      - files: [\"{}/trafficsim*.json\"]\n        refresh_interval: 1s\n",
                env.prometheus_targets.display()
            ),
        )
        .unwrap();
        let process = spawn(
            "prometheus",
            ns,
            "prometheus",
            &[
                "--config.file",
                config.to_str().unwrap(),
                "--storage.tsdb.path",
                dir.join("data").to_str().unwrap(),
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
            ],
        );
        Prometheus {
            process: Some(process),
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `query` returns a series.
    pub async fn await_series(&self, query: &str) {
        let env = Env {
            prometheus_url: self.url(),
            ..Env::get()
        };
        eventually(
            &format!("{query} in the test's Prometheus"),
            Duration::from_secs(60),
            || async {
                let result = crate::harness::prometheus_query(&env, query).await?;
                if result.is_empty() {
                    Err("no series yet".to_string())
                } else {
                    Ok(())
                }
            },
        )
        .await
    }

    pub async fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.child.start_kill().unwrap();
            p.child.wait().await.unwrap();
        }
    }
}

/// One sample of the traffic simulator's own `/metrics`: its labels and value.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// The samples of `metric` in a Prometheus text exposition (label values without commas
/// or escaped quotes, as the simulator writes them).
pub fn parse_samples(text: &str, metric: &str) -> Vec<Sample> {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, value) = rest.split_once("} ")?;
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Sample {
                labels,
                value: value.trim().parse().ok()?,
            })
        })
        .collect()
}

/// What the traffic simulator and the pods show, read directly rather than through
/// Prometheus: the simulator's counters are exact and current, and a test can act on a
/// pod as a kubelet would.
impl Rollout {
    /// The simulator's `/metrics` URL, from the file it registers in the Prometheus
    /// targets directory (labelled with the namespace it simulates).
    pub async fn sim_metrics_url(&self) -> String {
        eventually(
            "the traffic simulator to register its /metrics endpoint",
            Duration::from_secs(30),
            || async {
                let dir = std::fs::read_dir(&self.env.prometheus_targets)
                    .map_err(|e| format!("reading the targets directory: {e}"))?;
                for entry in dir.flatten() {
                    if !entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with("trafficsim")
                    {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(entry.path()) else {
                        continue;
                    };
                    let Ok(targets) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if targets[0]["labels"]["namespace_scope"] == self.ns.as_str()
                        && let Some(address) = targets[0]["targets"][0].as_str()
                    {
                        return Ok(format!("http://{address}/metrics"));
                    }
                }
                Err(format!("no trafficsim target for {} yet", self.ns))
            },
        )
        .await
    }

    /// The samples of `metric` the simulator exports now.
    pub async fn sim_samples(&self, metric: &str) -> Vec<Sample> {
        let url = self.sim_metrics_url().await;
        let text = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("reading the simulator's {url}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("reading the simulator's {url}: {e}"));
        parse_samples(&text, metric)
    }

    /// Requests the simulator routed to a backend with no ready pods, keyed
    /// `service -> workload` (only backends that ever got such a request appear).
    pub async fn unready_requests(&self) -> std::collections::BTreeMap<String, u64> {
        self.sim_samples("serin_sim_unready_requests_total")
            .await
            .into_iter()
            .map(|s| {
                (
                    format!("{} -> {}", s.label("service"), s.label("workload")),
                    s.value as u64,
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The invariant every scenario ends with: no request was routed to a backend
    /// without a ready pod (a real mesh would have answered each with a 503).
    pub async fn assert_no_request_reached_an_unready_backend(&self) {
        let unready = self.unready_requests().await;
        assert!(
            unready.is_empty(),
            "requests were routed to a backend with no ready pods: {unready:?}; controller log:\n{}",
            self.controller_log()
        );
    }

    /// Pauses the simulated users: returns once a whole round has passed without a
    /// request, so that no round is under way. See [`Rollout::resume_users`].
    pub async fn pause_users(&self) {
        std::fs::write(pause_file(&self.env, &self.ns), b"").unwrap();
        let sent = |samples: Vec<Sample>| samples.iter().map(|s| s.value).sum::<f64>();
        let mut before = sent(self.sim_samples("istio_requests_total").await);
        loop {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let now = sent(self.sim_samples("istio_requests_total").await);
            if now == before {
                return;
            }
            before = now;
        }
    }

    /// The users send requests again, through the routes as they are now.
    pub fn resume_users(&self) {
        std::fs::remove_file(pause_file(&self.env, &self.ns)).unwrap();
    }

    /// The pods matching `selector` that are not being deleted.
    pub async fn pods(&self, selector: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Sets the Ready condition of every pod matching `selector`, through the pods/status
    /// subresource, as the kubelet does when a readiness probe starts failing or passes
    /// again. kwok sets a pod's status once, when the pod has no IP yet (its `pod-ready`
    /// stage selects pods without `.status.podIP`), and leaves it alone afterwards, so
    /// the condition written here stays until the next call.
    pub async fn set_pods_ready(&self, selector: &str, ready: bool) -> usize {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.ns);
        let pods = self.pods(selector).await;
        let status = if ready { "True" } else { "False" };
        let reason = if ready { "" } else { "ReadinessProbeFailed" };
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        for pod in &pods {
            let containers: Vec<Value> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| json!({"name": c.name, "ready": ready}))
                .collect();
            let patch = json!({"status": {
                "conditions": [
                    {"type": "Ready", "status": status, "reason": reason, "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": status, "reason": reason, "lastTransitionTime": now}
                ],
                "containerStatuses": containers
            }});
            let name = pod.metadata.name.clone().unwrap_or_default();
            api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .unwrap_or_else(|e| panic!("setting Ready={status} on pod {name}: {e}"));
        }
        pods.len()
    }

    /// Removes the scheduling gates of the pods matching `selector` once `count` of them
    /// exist, so that the scheduler places them and kwok makes them Ready.
    pub async fn open_scheduling_gates(&self, selector: &str, count: usize) {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.ns);
        let pods = eventually(
            &format!("{count} pods {selector}"),
            Duration::from_secs(60),
            || async {
                let pods = self.pods(selector).await;
                if pods.len() >= count {
                    Ok(pods)
                } else {
                    Err(format!("{} pods", pods.len()))
                }
            },
        )
        .await;
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"schedulingGates": null}})),
            )
            .await
            .unwrap_or_else(|e| panic!("opening the scheduling gates of pod {name}: {e}"));
        }
    }

    /// The ready replicas of a Deployment as its status reports them.
    pub async fn ready_replicas(&self, name: &str) -> i32 {
        self.deployment(name)
            .await
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    }
}
