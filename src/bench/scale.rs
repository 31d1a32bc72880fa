//! Scale benchmark (`serin bench scale --canaries N`): N Deployments with a Canary each
//! in one namespace of the local control plane (kwok nodes), one serin controller and
//! the traffic simulator covering all of them. Every Canary is initialised, then each
//! target gets a new image at once and is released (interval 10 s), then everything stays
//! idle for a while. Reported: the controller's RSS and CPU seconds, serin's API requests
//! by verb during the releases and while idle (from the API server's audit log, by
//! serin's User-Agent), Prometheus queries per second, the time from a target change to
//! phase Progressing, and how late analysis steps come after their interval.
//!
//! Needs the environment of `SERIN_E2E_AUDIT_LOG=1 tests/e2e/cluster.sh up`.

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use thiserror::Error;
use tokio::process::{Child, Command};

use crate::api::{Canary, CanaryPhase};

#[derive(Debug, Error)]
pub enum Error {
    #[error(
        "{0} is not set: the benchmark runs on the local control plane; start it with \
         `. $(SERIN_E2E_AUDIT_LOG=1 tests/e2e/cluster.sh up)`"
    )]
    Env(&'static str),
    #[error("talking to the API server")]
    Kube(#[from] kube::Error),
    #[error("building the Kubernetes client")]
    Client(#[from] crate::controller::client::Error),
    #[error("starting or reading {0}")]
    Io(String, #[source] std::io::Error),
    #[error("querying Prometheus")]
    Prometheus(#[source] reqwest::Error),
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct ScaleConfig {
    pub canaries: usize,
    /// The analysis interval of every Canary.
    pub interval: Duration,
    /// The idle window measured after the releases.
    pub idle: Duration,
    /// Requests per second the simulator sends through each route.
    pub rps: u64,
    /// A command the controller runs under (a profiler), split at spaces.
    pub wrap: Option<String>,
}

/// The figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub canaries: usize,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    /// Of the RSS: anonymous memory (the heap, stacks) and file-backed pages (the binary).
    pub rss_anon_mib: f64,
    pub rss_file_mib: f64,
    pub cpu_seconds: f64,
    pub release_seconds: f64,
    /// Releases rolled back (healthy releases: none expected).
    pub failed: usize,
    pub release_requests: BTreeMap<String, usize>,
    pub idle_seconds: f64,
    pub idle_requests: BTreeMap<String, usize>,
    pub writes_per_release: f64,
    pub prometheus_queries_per_second: f64,
    pub detection: Percentiles,
    pub lateness: Percentiles,
    /// CPU seconds each process used during the releases (serin, the simulator and the
    /// local control plane's), highest first.
    pub release_cpu: Vec<(String, f64)>,
    /// serin's reconcile durations over the whole run, from its own histogram.
    pub reconcile: Percentiles,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub count: usize,
}

impl Percentiles {
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            values[i]
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            count: values.len(),
        }
    }
}

const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

fn writes(requests: &BTreeMap<String, usize>) -> usize {
    WRITES.iter().filter_map(|v| requests.get(*v)).sum()
}

/// Requests other than watches and the leader Lease (none in this run).
fn non_watch(requests: &BTreeMap<String, usize>) -> usize {
    requests
        .iter()
        .filter(|(v, _)| *v != "watch")
        .map(|(_, n)| n)
        .sum()
}

impl Report {
    pub fn render_text(&self) -> String {
        let verbs = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(v, n)| format!("{v} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "canaries: {}\n\
             controller RSS: {:.1} MiB (peak {:.1} MiB; anonymous {:.1}, file {:.1}), CPU: {:.1} s\n\
             releases: {:.0} s ({} rolled back), API requests by verb: {}\n\
             write requests per release: {:.1}\n\
             idle {:.0} s, API requests by verb: {} ({} other than watches)\n\
             Prometheus queries/s during releases: {:.2}\n\
             detection (target change -> Progressing): p50 {:.2} s, p99 {:.2} s (n={})\n\
             step lateness (behind the interval): p50 {:.2} s, p99 {:.2} s (n={})\n\
             serin's reconciles: p50 <= {} s, p99 <= {} s (n={}, bucket bounds)\n\
             CPU during the releases ({:.0} s on {} cores): {}\n",
            self.canaries,
            self.rss_mib,
            self.peak_rss_mib,
            self.rss_anon_mib,
            self.rss_file_mib,
            self.cpu_seconds,
            self.release_seconds,
            self.failed,
            verbs(&self.release_requests),
            self.writes_per_release,
            self.idle_seconds,
            verbs(&self.idle_requests),
            non_watch(&self.idle_requests),
            self.prometheus_queries_per_second,
            self.detection.p50,
            self.detection.p99,
            self.detection.count,
            self.lateness.p50,
            self.lateness.p99,
            self.lateness.count,
            self.reconcile.p50,
            self.reconcile.p99,
            self.reconcile.count,
            self.release_seconds,
            cores(),
            self.release_cpu
                .iter()
                .map(|(name, s)| format!(
                    "{name} {s:.1} s ({:.0}%)",
                    100.0 * s / (self.release_seconds * cores() as f64).max(1.0)
                ))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// One row of the table in docs/benchmarks.md.
    pub fn render_row(&self) -> String {
        format!(
            "| {} | {:.1} | {:.1} | {} | {:.1} | {} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            self.canaries,
            self.rss_mib,
            self.cpu_seconds,
            writes(&self.release_requests),
            self.writes_per_release,
            non_watch(&self.idle_requests),
            self.prometheus_queries_per_second,
            self.detection.p50,
            self.detection.p99,
            self.lateness.p50,
            self.lateness.p99,
        )
    }
}

pub const TABLE_HEADER: &str = "| canaries | RSS MiB | CPU s | writes in releases | writes/release | idle requests (non-watch) | Prometheus queries/s | detection p50 / p99 s | step lateness p50 / p99 s |\n|---|---|---|---|---|---|---|---|---|";

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Env {
    pids: PathBuf,
    prometheus_url: String,
    targets: String,
    audit_log: PathBuf,
    logs: PathBuf,
}

fn env() -> Result<Env> {
    let var = |name: &'static str| std::env::var(name).map_err(|_| Error::Env(name));
    var("KUBECONFIG")?;
    let dir = PathBuf::from(var("SERIN_E2E_DIR")?);
    Ok(Env {
        pids: dir.join("pids"),
        prometheus_url: var("SERIN_PROMETHEUS_URL")?,
        targets: var("SERIN_PROMETHEUS_TARGETS")?,
        audit_log: var("SERIN_E2E_AUDIT_LOG")?.into(),
        logs: dir.join("logs"),
    })
}

fn spawn(program: &Path, args: &[&str], log: &Path) -> Result<Child> {
    let io = |e| Error::Io(log.display().to_string(), e);
    let file = std::fs::File::create(log).map_err(io)?;
    let err = file.try_clone().map_err(io)?;
    Command::new(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Io(program.display().to_string(), e))
}

/// The audit log, read on from where the last read stopped.
struct Audit {
    path: PathBuf,
    offset: u64,
}

impl Audit {
    fn new(path: PathBuf) -> Audit {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Audit { path, offset }
    }

    /// serin's requests in `ns` since the last call, by verb.
    fn requests(&mut self, ns: &str) -> Result<BTreeMap<String, usize>> {
        let io = |e| Error::Io(self.path.display().to_string(), e);
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let complete = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
        self.offset += complete as u64;
        let agent = crate::controller::client::user_agent();
        let mut counts = BTreeMap::new();
        for line in text[..complete].lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if event["stage"] != "ResponseComplete"
                || event["userAgent"] != agent.as_str()
                || event["objectRef"]["namespace"] != ns
            {
                continue;
            }
            let verb = event["verb"].as_str().unwrap_or_default().to_string();
            *counts.entry(verb).or_default() += 1;
        }
        Ok(counts)
    }
}

fn deployment(name: &str, tag: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name},
                    "annotations": {"sim.serin.dev/error-rate": "0", "sim.serin.dev/latency-ms": "40"}
                },
                "spec": {"containers": [{"name": "app", "image": format!("ghcr.io/stefanprodan/podinfo:{tag}"), "ports": [{"containerPort": 9898}]}]}
            }
        }
    })
}

fn canary(name: &str, interval: Duration) -> Value {
    json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Canary",
        "metadata": {"name": name},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 600,
            "service": {"port": 9898, "targetPort": 9898},
            "analysis": {
                "interval": format!("{}s", interval.as_secs()), "threshold": 2,
                "maxWeight": 50, "stepWeight": 25,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "30s"}
                ]
            }
        }
    })
}

fn name(i: usize) -> String {
    format!("app-{i:05}")
}

/// Server-side applies `objects` with up to 16 requests at once.
async fn apply_all(client: &Client, ns: &str, objects: Vec<Value>) -> Result<()> {
    futures::stream::iter(objects)
        .map(|object| async move {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let params = PatchParams::apply("serin-bench").force();
            match object["kind"].as_str() {
                Some("Canary") => {
                    Api::<Canary>::namespaced(client.clone(), ns)
                        .patch(name, &params, &Patch::Apply(&object))
                        .await?;
                }
                _ => {
                    Api::<Deployment>::namespaced(client.clone(), ns)
                        .patch(name, &params, &Patch::Apply(&object))
                        .await?;
                }
            }
            Ok::<_, Error>(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// What the watch of the Canaries saw: when each first reached Progressing after the
/// release, and when each analysis step (a new weight, promotion) was taken.
#[derive(Default)]
struct Seen {
    phases: HashMap<String, CanaryPhase>,
    progressing: HashMap<String, Instant>,
    steps: HashMap<String, Vec<Instant>>,
    last: HashMap<String, (CanaryPhase, i32)>,
}

/// Waits until `n` Canaries are in one of `phases`.
async fn wait_for(
    seen: &Arc<Mutex<Seen>>,
    n: usize,
    phases: &[CanaryPhase],
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let count = {
            let seen = seen.lock().expect("lock");
            seen.phases.values().filter(|p| phases.contains(p)).count()
        };
        if count >= n {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(Error::Timeout(
                timeout,
                format!("{n} Canaries in {phases:?} ({count} are)"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn proc_status(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// User and system CPU seconds of `pid` (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The processes whose CPU the report shows: `named` and every process of the local
/// control plane (`cluster.sh` records one pid per process in its `pids` directory).
fn processes<'a>(
    pids: &Path,
    named: impl IntoIterator<Item = (&'a str, u32)>,
) -> Vec<(String, u32)> {
    let mut all: Vec<(String, u32)> = named.into_iter().map(|(n, p)| (n.to_string(), p)).collect();
    if let Ok(entries) = std::fs::read_dir(pids) {
        for entry in entries.flatten() {
            let pid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if let Some(pid) = pid {
                all.push((entry.file_name().to_string_lossy().into_owned(), pid));
            }
        }
    }
    all
}

/// Sends SIGTERM to a process when dropped.
struct Stop(Option<u32>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

/// The pid of the serin process a wrapper (a profiler) started: a descendant of
/// `wrapper` whose name is `serin`.
async fn serin_under(wrapper: u32) -> Result<u32> {
    let parent_of = |pid: u32| -> Option<(String, u32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_string();
        Some((name, rest.split_whitespace().nth(1)?.parse().ok()?))
    };
    for _ in 0..100 {
        let found = std::fs::read_dir("/proc")
            .map_err(|e| Error::Io("/proc".into(), e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let Some((name, mut parent)) = parent_of(*pid) else {
                    return false;
                };
                if name != "serin" {
                    return false;
                }
                while parent > 1 {
                    if parent == wrapper {
                        return true;
                    }
                    parent = parent_of(parent).map_or(0, |(_, p)| p);
                }
                false
            });
        if let Some(pid) = found {
            return Ok(pid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Error::Timeout(
        Duration::from_secs(10),
        "the wrapped serin process".into(),
    ))
}

/// p50 and p99 (upper bucket bounds) of `serin_reconcile_duration_seconds`, from the
/// controller's /metrics; empty when it cannot be read.
async fn reconcile_durations(listen: &str) -> Percentiles {
    let Ok(response) = reqwest::get(format!("http://{listen}/metrics")).await else {
        return Percentiles::default();
    };
    let text = response.text().await.unwrap_or_default();
    histogram_percentiles(&text, "serin_reconcile_duration_seconds")
}

/// Nearest-bucket p50 and p99 of a Prometheus text-format histogram: the upper bound of
/// the first bucket holding that share of the observations.
fn histogram_percentiles(text: &str, name: &str) -> Percentiles {
    let prefix = format!("{name}_bucket{{");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| *n >= q * total)
            .map_or(0.0, |(le, _)| *le)
    };
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        count: total as usize,
    }
}

/// Queries Prometheus has answered so far (its own counter).
async fn prometheus_queries(url: &str) -> Result<f64> {
    let body: Value = reqwest::Client::new()
        .get(format!("{url}/api/v1/query"))
        .query(&[(
            "query",
            r#"sum(prometheus_http_requests_total{handler=~"/api/v1/query|/api/v1/query_range"})"#,
        )])
        .send()
        .await
        .map_err(Error::Prometheus)?
        .json()
        .await
        .map_err(Error::Prometheus)?;
    Ok(body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

/// Runs the benchmark; the namespace and the processes it started are removed at the
/// end, also when it fails.
pub async fn run(config: &ScaleConfig) -> Result<Report> {
    let env = env()?;
    let client = crate::controller::client::client_as("serin-bench").await?;
    let ns = format!("bench-scale-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let result = measure(config, &env, &client, &ns).await;
    // The benchmark's controller is gone with `measure`: its finalizers would keep the
    // namespace terminating (and its pods loading the control plane) forever.
    let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
    if let Ok(list) = canaries.list_metadata(&Default::default()).await {
        let release = json!({"metadata": {"finalizers": null}});
        futures::stream::iter(list.items)
            .map(|c| {
                let (canaries, release) = (&canaries, &release);
                async move {
                    let _ = canaries
                        .patch(
                            &c.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(release),
                        )
                        .await;
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    }
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    result
}

async fn measure(config: &ScaleConfig, env: &Env, client: &Client, ns: &str) -> Result<Report> {
    let n = config.canaries;
    let exe = std::env::current_exe().map_err(|e| Error::Io("the serin binary".into(), e))?;
    let sim_exe = exe.with_file_name("serin-trafficsim");
    let rps = config.rps.to_string();
    let sim = spawn(
        &sim_exe,
        &[
            "--namespace",
            ns,
            "--rps",
            &rps,
            "--targets-dir",
            &env.targets,
        ],
        &env.logs.join(format!("trafficsim-{ns}.log")),
    )?;
    let sim_pid = sim.id().unwrap_or(0);
    // A free port for serin's /metrics, read at the end for its reconcile durations.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::Io("a free port".into(), e))?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let exe_path = exe.display().to_string();
    let mut command: Vec<&str> = config
        .wrap
        .as_deref()
        .map(|w| w.split_whitespace().collect())
        .unwrap_or_default();
    command.extend([
        exe_path.as_str(),
        "run",
        "--namespace",
        ns,
        "--metrics-server",
        &env.prometheus_url,
        "--listen",
        &listen,
        "--leader-elect=false",
    ]);
    let serin = spawn(
        Path::new(command[0]),
        &command[1..],
        &env.logs.join(format!("serin-{ns}.log")),
    )?;
    let spawned = serin
        .id()
        .ok_or_else(|| Error::Io("serin".into(), std::io::ErrorKind::NotFound.into()))?;
    let pid = if config.wrap.is_some() {
        serin_under(spawned).await?
    } else {
        spawned
    };
    // A wrapper's serin is not its child: stop it when the benchmark ends (also on error).
    let _wrapped = Stop(config.wrap.is_some().then_some(pid));

    // Everything the Canaries go through, as a user's watch sees it.
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watching = {
        let seen = seen.clone();
        let canaries: Api<Canary> = Api::namespaced(client.clone(), ns);
        tokio::spawn(async move {
            let stream = watcher(canaries, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let c = match event {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("[bench] watching the Canaries: {e}");
                        continue;
                    }
                };
                let Some(status) = &c.status else { continue };
                let now = Instant::now();
                let name = c.name_any();
                let mut seen = seen.lock().expect("lock");
                seen.phases.insert(name.clone(), status.phase);
                let now_state = (status.phase, status.canary_weight);
                let before = seen.last.insert(name.clone(), now_state);
                if before == Some(now_state) {
                    continue;
                }
                if status.phase == CanaryPhase::Progressing {
                    seen.progressing.entry(name.clone()).or_insert(now);
                }
                // An analysis step: a new weight, or the promotion after the last one.
                let step = (status.phase == CanaryPhase::Progressing && status.canary_weight > 0)
                    || status.phase == CanaryPhase::Promoting;
                if step {
                    seen.steps.entry(name).or_default().push(now);
                }
            }
        })
    };

    let started = Instant::now();
    eprintln!("[bench] creating {n} Deployments and Canaries in {ns}");
    let initial: Vec<Value> = (0..n)
        .flat_map(|i| {
            [
                deployment(&name(i), "6.0.0"),
                canary(&name(i), config.interval),
            ]
        })
        .collect();
    apply_all(client, ns, initial).await?;
    let timeout = Duration::from_secs(300 + n as u64);
    wait_for(&seen, n, &[CanaryPhase::Initialized], timeout).await?;
    eprintln!(
        "[bench] {n} Canaries initialised after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // What the initialisation implies (routes, scale-down) is written by now.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut audit = Audit::new(env.audit_log.clone());

    // The release: every target gets a new image at once.
    let queries_before = prometheus_queries(&env.prometheus_url).await?;
    {
        let mut seen = seen.lock().expect("lock");
        seen.progressing.clear();
        seen.steps.clear();
    }
    let processes = processes(&env.pids, [("serin", pid), ("simulator", sim_pid)]);
    let cpu_before: Vec<f64> = processes.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let released = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let changed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    futures::stream::iter(0..n)
        .map(|i| {
            let (deployments, changed) = (deployments.clone(), changed.clone());
            async move {
                let name = name(i);
                let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.1"}]}}}});
                deployments
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await?;
                changed.lock().expect("lock").insert(name, Instant::now());
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    wait_for(
        &seen,
        n,
        &[CanaryPhase::Succeeded, CanaryPhase::Failed],
        timeout,
    )
    .await?;
    let release_seconds = released.elapsed().as_secs_f64();
    let failed = {
        let seen = seen.lock().expect("lock");
        seen.phases
            .values()
            .filter(|p| **p == CanaryPhase::Failed)
            .count()
    };
    let queries_after = prometheus_queries(&env.prometheus_url).await?;
    let mut release_cpu: Vec<(String, f64)> = processes
        .iter()
        .zip(cpu_before)
        .map(|((name, p), before)| (name.clone(), cpu_seconds(*p) - before))
        .collect();
    release_cpu.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("[bench] {n} releases finished after {release_seconds:.0} s ({failed} rolled back)");
    // The last writes of a promotion (routes, scale-down) follow its status.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let release_requests = audit.requests(ns)?;

    let idle_started = Instant::now();
    tokio::time::sleep(config.idle).await;
    let idle_requests = audit.requests(ns)?;
    let idle_seconds = idle_started.elapsed().as_secs_f64();

    let (detection, lateness) = {
        let seen = seen.lock().expect("lock");
        let changed = changed.lock().expect("lock");
        let detection = seen
            .progressing
            .iter()
            .filter_map(|(name, at)| {
                let from = changed.get(name)?;
                Some(at.saturating_duration_since(*from).as_secs_f64())
            })
            .collect();
        let interval = config.interval.as_secs_f64();
        let lateness = seen
            .steps
            .values()
            .flat_map(|steps| {
                steps
                    .windows(2)
                    .map(|w| (w[1].duration_since(w[0]).as_secs_f64() - interval).max(0.0))
                    .collect::<Vec<_>>()
            })
            .collect();
        (Percentiles::of(detection), Percentiles::of(lateness))
    };
    watching.abort();
    let reconcile = reconcile_durations(&listen).await;
    let report = Report {
        canaries: n,
        rss_mib: proc_status(pid, "VmRSS:"),
        peak_rss_mib: proc_status(pid, "VmHWM:"),
        rss_anon_mib: proc_status(pid, "RssAnon:"),
        rss_file_mib: proc_status(pid, "RssFile:"),
        cpu_seconds: cpu_seconds(pid),
        release_seconds,
        failed,
        writes_per_release: writes(&release_requests) as f64 / n as f64,
        release_requests,
        idle_seconds,
        idle_requests,
        // Two of the queries are the benchmark's own.
        prometheus_queries_per_second: (queries_after - queries_before - 2.0).max(0.0)
            / release_seconds,
        detection,
        lateness,
        release_cpu,
        reconcile,
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_the_upper_bounds_of_the_buckets_that_hold_them() {
        let text = "# TYPE serin_reconcile_duration_seconds histogram\n\
            serin_reconcile_duration_seconds_sum 12.5\n\
            serin_reconcile_duration_seconds_count 100\n\
            serin_reconcile_duration_seconds_bucket{le=\"0.01\"} 40\n\
            serin_reconcile_duration_seconds_bucket{le=\"0.1\"} 90\n\
            serin_reconcile_duration_seconds_bucket{le=\"1.0\"} 98\n\
            serin_reconcile_duration_seconds_bucket{le=\"10.0\"} 100\n\
            serin_reconcile_duration_seconds_bucket{le=\"+Inf\"} 100\n";
        let p = histogram_percentiles(text, "serin_reconcile_duration_seconds");
        assert_eq!((p.p50, p.p99, p.count), (0.1, 10.0, 100));
        let none = histogram_percentiles("", "serin_reconcile_duration_seconds");
        assert_eq!(none.count, 0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p99, p.count), (50.0, 99.0, 100));
        let one = Percentiles::of(vec![3.0]);
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
        assert_eq!(Percentiles::of(vec![]).count, 0);
    }

    #[test]
    fn writes_count_every_verb_that_changes_an_object() {
        let counts: BTreeMap<String, usize> =
            [("patch", 3), ("create", 2), ("get", 5), ("watch", 4)]
                .into_iter()
                .map(|(v, n)| (v.to_string(), n))
                .collect();
        assert_eq!(writes(&counts), 5);
        assert_eq!(non_watch(&counts), 10);
    }
}
