//! Scale benchmark (`serin bench scale --canaries N`): N Deployments with a Canary each
//! in one namespace of the local control plane (kwok nodes), one serin controller and
//! the traffic simulator covering all of them. Every Canary is initialised, then each
//! target gets a new image (all at once, or evenly over `--spread`) and is released
//! (interval 10 s), then everything stays idle for a while. Reported: the controller's RSS and CPU seconds, serin's API requests
//! by verb during the releases and while idle (from the API server's audit log, by
//! serin's User-Agent), Prometheus queries per second, the time from a target change to
//! phase Progressing, and how late analysis steps come after their interval.
//!
//! Needs the environment of `SERIN_E2E_AUDIT_LOG=1 tests/e2e/cluster.sh up`.

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
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

use crate::api::{Canary, CanaryPhase};

mod process;
mod report;

use process::{Stop, cpu_seconds, proc_status, processes, serin_under, spawn};
pub use report::{Percentiles, Report, TABLE_HEADER};
use report::{histogram_percentiles, labelled_percentiles, writes};

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
    /// The window over which the releases start, evenly; zero: all at once.
    pub spread: Duration,
    /// Requests per second the simulator sends through each route.
    pub rps: u64,
    /// A command the controller runs under (a profiler), split at spaces.
    pub wrap: Option<String>,
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

/// When the `i`-th of `n` releases starts, after the first: evenly over `spread`.
fn release_offset(i: usize, n: usize, spread: Duration) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    spread.mul_f64(i as f64 / n as f64)
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

/// p50 and p99 (upper bucket bounds) of serin's own histograms, from its /metrics; empty
/// when they cannot be read.
#[derive(Default)]
struct Own {
    reconcile: Percentiles,
    tick_lateness: Percentiles,
    slot_wait_tick: Percentiles,
    slot_wait_other: Percentiles,
}

async fn own_histograms(listen: &str) -> Own {
    let Ok(response) = reqwest::get(format!("http://{listen}/metrics")).await else {
        return Own::default();
    };
    let text = response.text().await.unwrap_or_default();
    let wait = "serin_reconcile_slot_wait_seconds";
    Own {
        reconcile: histogram_percentiles(&text, "serin_reconcile_duration_seconds"),
        tick_lateness: histogram_percentiles(&text, "serin_analysis_tick_lateness_seconds"),
        slot_wait_tick: labelled_percentiles(&text, wait, r#"lane="tick""#),
        slot_wait_other: labelled_percentiles(&text, wait, r#"lane="other""#),
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

    // The release: every target gets a new image, at once or spread evenly.
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
            let at = released + release_offset(i, n, config.spread);
            async move {
                tokio::time::sleep_until(at.into()).await;
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
        timeout + config.spread,
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
    let own = own_histograms(&listen).await;
    let report = Report {
        canaries: n,
        spread_seconds: config.spread.as_secs_f64(),
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
        reconcile: own.reconcile,
        tick_lateness: own.tick_lateness,
        slot_wait_tick: own.slot_wait_tick,
        slot_wait_other: own.slot_wait_other,
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_releases_start_evenly_over_the_window_and_a_burst_starts_at_once() {
        let spread = Duration::from_secs(100);
        let offsets: Vec<_> = (0..4).map(|i| release_offset(i, 4, spread)).collect();
        assert_eq!(
            offsets,
            [0, 25, 50, 75].map(Duration::from_secs),
            "the last release starts one gap before the window ends"
        );
        assert!((0..1000).all(|i| release_offset(i, 1000, Duration::ZERO).is_zero()));
    }
}
