//! Chaos: releases carried to their end while serin is SIGKILLed and restarted at random,
//! seeded points, watched from outside serin (the API server and the simulator's
//! counters) for the invariants a fault must never break:
//!
//! - the route's weights always add up to 100, and no user request reaches a backend
//!   with no ready pod (`serin_sim_unready_requests_total` stays 0);
//! - the primary is never scaled to zero while the route sends it traffic;
//! - a release ends with the outcome its metrics call for: a bad one is never promoted, a
//!   good one never rolled back by a fault;
//! - no step is applied twice (the canary's weight never rises again after it fell within
//!   a release), and the conformance test runs once per revision (one Job, one pod).
//!
//! Besides SIGKILLs, releases draw GitOps faults (re-applies, edits mid-analysis), a
//! good canary whose error rate flips to 20% mid-analysis, and Prometheus faults through
//! a proxy serin queries (503, slow, NaN, empty answers). With
//! `SERIN_CHAOS_CONTROL_PLANE_EVERY=n`, every n-th release also loses the control plane:
//! kube-apiserver SIGKILLed and restarted (and the components that talk to it restarted
//! after it, as a kubelet restarts them when they lose their leases), or etcd paused.
//!
//! The short version runs in `make test` (no control-plane faults: the other tests share
//! the control plane); `make chaos` runs the long one (`SERIN_CHAOS_RELEASES`,
//! `SERIN_CHAOS_SEED`, `SERIN_CHAOS_CONTROL_PLANE_EVERY`) and prints the table of
//! docs/chaos.md.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::{Api, api::ListParams};
use serde_json::json;
use serin::api::CanaryPhase;
use serin::sim::Rng;

use crate::faults::{PrometheusFault, PrometheusProxy};
use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::gates::conformance_test;
use crate::harness::with_namespace;

/// How long one release may take, faults included.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(180);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One violation of an invariant, with when it was seen.
struct Violation {
    at: Duration,
    release: usize,
    what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at {:.1} s, release {}: {}",
            self.at.as_secs_f64(),
            self.release,
            self.what
        )
    }
}

#[derive(Default)]
struct Tally {
    kills: usize,
    apiserver_restarts: usize,
    etcd_pauses: usize,
    /// Prometheus faults by kind.
    prometheus: std::collections::BTreeMap<&'static str, usize>,
    /// Good canaries whose error rate flipped to 20% mid-analysis.
    flips: usize,
    /// Canaries deleted mid-release (with `revertOnDeletion`) and applied again.
    deletions: usize,
    /// Outcomes of the releases under faults.
    outcomes: std::collections::BTreeMap<String, usize>,
    /// The manifests re-applied unchanged mid-release, as a GitOps tool does.
    reapplies: usize,
    /// The target edited again mid-analysis.
    edits: usize,
    violations: Vec<Violation>,
    rows: Vec<String>,
}

/// What the checker saw of one release.
#[derive(Default)]
struct Seen {
    /// Distinct consecutive canary weights of the route.
    weights: Vec<u64>,
    /// After an edit mid-analysis, the weights of the analysis it replaced are not
    /// recorded: the record starts again when the route falls to 0 for the new one.
    until_restart: bool,
}

impl Seen {
    /// A step applied twice shows as the weight rising again after it fell.
    fn step_repeated(&self) -> Option<String> {
        let fell = self.weights.windows(2).position(|w| w[1] < w[0])?;
        let after = &self.weights[fell + 1..];
        after.windows(2).any(|w| w[1] > w[0]).then(|| {
            format!(
                "the canary weight rose again after it fell: {:?}",
                self.weights
            )
        })
    }
}

/// The Canary's status, or `None` while the API server does not answer.
async fn status(rollout: &Rollout) -> Option<serin::api::CanaryStatus> {
    Api::<serin::api::Canary>::namespaced(rollout.client.clone(), &rollout.ns)
        .get("podinfo")
        .await
        .ok()?
        .status
}

/// The primary's replicas, or `None` while the API server does not answer.
async fn primary_replicas(rollout: &Rollout) -> Option<i32> {
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(rollout.client.clone(), &rollout.ns)
        .get("podinfo-primary")
        .await
        .ok()
        .map(|d| Rollout::replicas(&d))
}

/// Samples the route and the primary once (skipped while the API server does not
/// answer); records violations.
async fn sample(rollout: &Rollout, release: usize, seen: &mut Seen, tally: &mut Tally) {
    let mut violation = |what: String| {
        tally.violations.push(Violation {
            at: rollout.elapsed(),
            release,
            what,
        })
    };
    let Some((primary, canary)) = rollout.vs_weights().await else {
        return;
    };
    if primary + canary != 100 {
        violation(format!(
            "route weights {primary}+{canary} do not add up to 100"
        ));
    }
    seen.until_restart &= canary != 0;
    if !seen.until_restart && seen.weights.last() != Some(&canary) {
        seen.weights.push(canary);
    }
    if primary > 0 && primary_replicas(rollout).await == Some(0) {
        violation(format!(
            "the primary is scaled to 0 while the route sends it {primary}%"
        ));
    }
}

/// The revision serin analyses or settled on last.
async fn applied(rollout: &Rollout) -> Option<String> {
    status(rollout).await.and_then(|s| s.last_applied_spec)
}

/// Runs `cluster.sh ARGS...` against this run's control plane.
fn cluster(rollout: &Rollout, args: &[&str]) -> tokio::process::Command {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/cluster.sh");
    let mut command = tokio::process::Command::new(script);
    command.arg(args[0]).arg(&rollout.env.dir).args(&args[1..]);
    command
}

/// SIGKILLs kube-apiserver and starts it again after `pause`; then restarts the
/// components that watch it. Their informers can stop seeing changes for minutes after
/// an API server restart ("informer cache is out of date"); with leader election (this
/// control plane runs without) they would lose their lease and exit, and the kubelet
/// would restart them.
async fn restart_apiserver(rollout: &Rollout, pause: Duration) {
    let pause = format!("{:.1}", pause.as_secs_f64());
    for (name, pause) in [
        ("kube-apiserver", pause.as_str()),
        ("kube-controller-manager", "0"),
        ("kube-scheduler", "0"),
        ("kwok", "0"),
    ] {
        let out = cluster(rollout, &["restart", name, pause])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name == "kube-apiserver" {
            crate::harness::eventually("the API server back", Duration::from_secs(90), || async {
                Api::<k8s_openapi::api::core::v1::Namespace>::all(rollout.client.clone())
                    .get(&rollout.ns)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await;
        }
    }
}

/// Pauses etcd for `pause` (SIGSTOP, then SIGCONT), in the background.
fn pause_etcd(rollout: &Rollout, pause: Duration) -> tokio::process::Child {
    cluster(
        rollout,
        &["pause", "etcd", &format!("{:.1}", pause.as_secs_f64())],
    )
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap()
}

/// Sets the target's own error-rate annotation, which the simulator reads over its pod
/// template's: the running canary turns bad (or back) without a new revision.
async fn set_running_error_rate(rollout: &Rollout, rate: Option<f64>) {
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(rollout.client.clone(), &rollout.ns);
    let value = rate.map(|r| r.to_string());
    let patch = json!({"metadata": {"annotations": {serin::sim::ERROR_RATE_ANNOTATION: value}}});
    api.patch(
        "podinfo",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

/// Deletes the Canary (it has `revertOnDeletion`), waits until it and what it owned are
/// gone, and applies it again, as someone who removes a release from serin's hands and
/// gives it back: the new Canary adopts the target as its primary.
async fn delete_and_apply_again(rollout: &Rollout, spec: &serde_json::Value) {
    let canaries: Api<serin::api::Canary> = Api::namespaced(rollout.client.clone(), &rollout.ns);
    canaries
        .delete("podinfo", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(rollout.client.clone(), &rollout.ns);
    crate::harness::eventually(
        "the deleted Canary and its primary gone",
        Duration::from_secs(120),
        || async {
            let canary = canaries
                .get_opt("podinfo")
                .await
                .map_err(|e| e.to_string())?;
            let primary = deployments
                .get_opt("podinfo-primary")
                .await
                .map_err(|e| e.to_string())?;
            match (canary, primary) {
                (None, None) => Ok(()),
                (c, p) => Err(format!(
                    "Canary there: {}, primary there: {}",
                    c.is_some(),
                    p.is_some()
                )),
            }
        },
    )
    .await;
    rollout.apply("kustomize-controller", spec).await;
    rollout
        .await_phase(CanaryPhase::Initialized, Duration::from_secs(120))
        .await;
}

/// A Prometheus fault for one release: which, from when, for how long.
struct PrometheusWindow {
    fault: PrometheusFault,
    from: Instant,
    until: Instant,
}

impl PrometheusWindow {
    fn draw(rng: &mut Rng) -> PrometheusWindow {
        let fault = match (rng.uniform() * 4.0) as u32 {
            0 => PrometheusFault::Down,
            1 => PrometheusFault::Slow(Duration::from_millis(
                1000 + (rng.uniform() * 2000.0) as u64,
            )),
            2 => PrometheusFault::NaN,
            _ => PrometheusFault::Empty,
        };
        let from = Instant::now() + Duration::from_millis(500 + (rng.uniform() * 3500.0) as u64);
        let until = from + Duration::from_millis(2000 + (rng.uniform() * 6000.0) as u64);
        PrometheusWindow { fault, from, until }
    }
}

/// Carries one release to its end, killing and restarting serin at random points and
/// injecting the release's other faults when `faults` is set. Returns the final phase
/// and how long the release took.
async fn release(
    rollout: &mut Rollout,
    spec: &serde_json::Value,
    proxy: &PrometheusProxy,
    rng: &mut Rng,
    index: usize,
    faults: bool,
    tally: &mut Tally,
) -> (CanaryPhase, Duration) {
    let before = applied(rollout).await;
    let mut bad = index > 0 && rng.uniform() < 0.4;
    let error_rate = if bad { 0.2 } else { 0.001 };
    let mut tag = format!("6.1.{index}");
    let mut tags = vec![tag.clone()];
    let started = Instant::now();
    rollout
        .apply_app("kustomize-controller", &tag, error_rate, 40.0)
        .await;
    // GitOps faults, drawn for the faulted releases: the same manifests re-applied
    // mid-release (nothing may restart), or the target edited again mid-analysis (the
    // analysis restarts, and the edit, as good or bad as the first, sets the outcome).
    let mut reapply = faults && rng.uniform() < 0.5;
    let mut edit = faults && rng.uniform() < 0.25;
    // A good canary that turns bad at its first step (20% errors from then on): the
    // release must be rolled back, though its first checks passed.
    let mut flip = faults && !bad && rng.uniform() < 0.2;
    // The Canary deleted mid-analysis and applied again.
    let delete = faults && rng.uniform() < 0.1;
    let mut deleted = false;
    // Prometheus answering 503, slowly, NaN or nothing for a few seconds.
    let mut prometheus = (faults && rng.uniform() < 0.4).then(|| PrometheusWindow::draw(rng));
    // The Prometheus fault, once it has started.
    let mut prometheus_fault = None;
    // The revision analysed when the target was edited: the release ends with another.
    let mut edited_from: Option<String> = None;
    let mut seen = Seen::default();
    let mut running = true;
    let mut next_fault =
        Instant::now() + Duration::from_millis(300 + (rng.uniform() * 2500.0) as u64);
    let mut kills = 0;
    // Every `SERIN_CHAOS_CONTROL_PLANE_EVERY`-th release also loses the control plane
    // once: the API server restarted, or etcd paused.
    let every = env_or("SERIN_CHAOS_CONTROL_PLANE_EVERY", 0) as usize;
    let mut control_plane_at = (faults && every > 0 && index.is_multiple_of(every))
        .then(|| Instant::now() + Duration::from_millis(500 + (rng.uniform() * 4000.0) as u64));
    let etcd = rng.uniform() < 0.5;
    let mut etcd_paused = None;
    let (phase, message) = loop {
        sample(rollout, index, &mut seen, tally).await;
        if control_plane_at.is_some_and(|at| Instant::now() >= at) {
            control_plane_at = None;
            let pause = Duration::from_millis(500 + (rng.uniform() * 2500.0) as u64);
            if etcd {
                etcd_paused = Some(pause_etcd(rollout, pause * 2));
                tally.etcd_pauses += 1;
            } else {
                restart_apiserver(rollout, pause).await;
                tally.apiserver_restarts += 1;
            }
        }
        if let Some(window) = &prometheus {
            let now = Instant::now();
            if now >= window.until {
                proxy.set(PrometheusFault::None);
                prometheus = None;
            } else if now >= window.from {
                proxy.set(window.fault);
                prometheus_fault = Some(window.fault);
            }
        }
        let Some(status) = status(rollout).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let settled = matches!(status.phase, CanaryPhase::Succeeded | CanaryPhase::Failed);
        if running
            && settled
            && status.last_applied_spec.is_some()
            && status.last_applied_spec != before
            && (edited_from.is_none() || status.last_applied_spec != edited_from)
        {
            break (status.phase, status.message.unwrap_or_default());
        }
        let mid_analysis = status.phase == CanaryPhase::Progressing
            && status.canary_weight > 0
            && status.last_applied_spec != before;
        if flip && mid_analysis && status.canary_weight == 10 {
            flip = false;
            bad = true;
            set_running_error_rate(rollout, Some(0.2)).await;
            tally.flips += 1;
        }
        if delete && mid_analysis && status.canary_weight >= 20 {
            deleted = true;
            // The finalizer needs serin running.
            if !running {
                rollout.start_controller();
            }
            delete_and_apply_again(rollout, spec).await;
            tally.deletions += 1;
            break (
                CanaryPhase::Initialized,
                "deleted mid-release and applied again".to_string(),
            );
        }
        if reapply && mid_analysis {
            reapply = false;
            rollout
                .apply_app("kustomize-controller", &tag, error_rate, 40.0)
                .await;
            rollout.apply("kustomize-controller", spec).await;
            tally.reapplies += 1;
        } else if edit && mid_analysis && edited_from.is_none() && status.canary_weight >= 20 {
            edit = false;
            edited_from = status.last_applied_spec.clone();
            tag = format!("6.1.{index}-edit");
            tags.push(tag.clone());
            rollout
                .apply_app("kustomize-controller", &tag, error_rate, 40.0)
                .await;
            // The restart from weight 0 is what an edit asks for, not a repeated step.
            seen = Seen {
                until_restart: true,
                ..Seen::default()
            };
            tally.edits += 1;
        }
        assert!(
            started.elapsed() < RELEASE_TIMEOUT,
            "release {index} ({tag}) did not end: phase {} weight {}; {:?}\n{}",
            status.phase,
            status.canary_weight,
            status.message,
            rollout.controller_log()
        );
        if faults && Instant::now() >= next_fault {
            if running {
                rollout.kill_controller().await;
                kills += 1;
                next_fault =
                    Instant::now() + Duration::from_millis(100 + (rng.uniform() * 700.0) as u64);
            } else {
                rollout.start_controller();
                next_fault =
                    Instant::now() + Duration::from_millis(300 + (rng.uniform() * 2500.0) as u64);
            }
            running = !running;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    tally.kills += kills;
    // The status is written before the route: the route follows within moments (after
    // a restart, if serin was killed in between). The next release starts once it has.
    let ended = Instant::now();
    let settled = loop {
        match rollout.vs_weights().await {
            Some((100, 0)) => break true,
            _ if ended.elapsed() > Duration::from_secs(30) => break false,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    if faults {
        *tally.outcomes.entry(phase.to_string()).or_default() += 1;
    }
    // The faults end with the release: the next one starts clean.
    proxy.set(PrometheusFault::None);
    if let Some(fault) = prometheus_fault {
        *tally.prometheus.entry(fault.label()).or_default() += 1;
    }
    if let Some(mut pause) = etcd_paused {
        pause.wait().await.unwrap();
    }
    if bad && error_rate < 0.1 {
        set_running_error_rate(rollout, None).await;
    }

    let mut violation = |what: String| {
        tally.violations.push(Violation {
            at: rollout.elapsed(),
            release: index,
            what,
        })
    };
    let expected = if bad {
        CanaryPhase::Failed
    } else {
        CanaryPhase::Succeeded
    };
    if deleted {
        // Taken out of serin's hands: the target served everything (revertOnDeletion),
        // and the Canary applied again adopted it, good or bad, as Flagger's does.
    } else if phase != expected {
        violation(format!(
            "{tag} ended {phase}, its metrics call for {expected}: {message}"
        ));
    }
    let primary = Rollout::image(&rollout.deployment("podinfo-primary").await);
    if deleted && !primary.ends_with(&format!(":{tag}")) {
        violation(format!(
            "the Canary applied again runs {primary} as its primary, not the target's {tag}"
        ));
    }
    for t in &tags {
        if bad && !deleted && primary.ends_with(&format!(":{t}")) {
            violation(format!("the bad release {t} was promoted"));
        }
    }
    if !bad && !deleted && !primary.ends_with(&format!(":{tag}")) {
        violation(format!(
            "the primary runs {primary}, not the last good edit {tag}"
        ));
    }
    if let Some(why) = seen.step_repeated() {
        violation(why);
    }
    if !settled {
        violation(format!(
            "the route still sends {:?} 30 s after the release ended",
            rollout.vs_weights().await
        ));
    }
    let revision = applied(rollout).await.unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(rollout.client.clone(), &rollout.ns);
    let runs = jobs
        .list(&ListParams::default().labels(&format!("serin.dev/revision={revision}")))
        .await
        .unwrap()
        .items
        .len();
    let pods = rollout
        .pods(&format!(
            "serin.dev/revision={revision},serin.dev/conformance-test=smoke"
        ))
        .await
        .len();
    if !deleted && (runs, pods) != (1, 1) {
        violation(format!(
            "the conformance test of {tag} ran {runs} Jobs and {pods} pods, not one"
        ));
    }
    let mut kind = if error_rate > 0.1 {
        "bad (20% errors)".to_string()
    } else if bad {
        "good, turned bad at 10%".to_string()
    } else {
        "good".to_string()
    };
    if let Some(fault) = prometheus_fault {
        kind.push_str(&format!("; Prometheus {}", fault.label()));
    }
    if deleted {
        kind.push_str("; Canary deleted and applied again");
    }
    if control_plane_at.is_none() && every > 0 && faults && index.is_multiple_of(every) {
        kind.push_str(if etcd {
            "; etcd paused"
        } else {
            "; API server restarted"
        });
    }
    tally.rows.push(format!(
        "| {index} | {} | {kind} | {kills} | {phase} | {:.1} s | {:?} |",
        tags.join(" then "),
        took.as_secs_f64(),
        seen.weights
    ));
    (phase, took)
}

/// Runs `releases` releases under SIGKILLs after one fault-free release, and checks that
/// no invariant was violated.
async fn chaos(prefix: &str, releases: usize, seed: u64) {
    with_namespace(prefix, |client, ns| async move {
        let mut spec = canary_spec(2);
        spec["spec"]["analysis"]["conformanceTests"] =
            json!([conformance_test("smoke", "1s", json!({}))]);
        // A Prometheus that answers NaN, nothing or not at all holds the analysis instead
        // of failing it: such gaps are not evidence against the release.
        for metric in spec["spec"]["analysis"]["metrics"].as_array_mut().unwrap() {
            metric["noData"] = json!("hold");
        }
        spec["spec"]["revertOnDeletion"] = json!(true);
        // serin queries Prometheus through the fault proxy. At 1,000 requests a second
        // the first check (2 s of a 10% canary: 200 requests) cannot fail a good
        // release's 0.1% errors by chance: that takes 3 errors (P about 0.1%), where at
        // 200 requests a second one error in 40 requests (P about 4%) read 97.5%.
        let mut rollout = Rollout::start_without_controller(client, &ns, 1000);
        let proxy = PrometheusProxy::start(&rollout.env.prometheus_url).await;
        rollout.env.prometheus_url = proxy.url.clone();
        rollout.start_controller();
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &spec).await;
        rollout
            .await_phase(CanaryPhase::Initialized, Duration::from_secs(60))
            .await;
        let mut rng = Rng::new(seed);
        let mut tally = Tally::default();
        let (_, baseline) =
            release(&mut rollout, &spec, &proxy, &mut rng, 0, false, &mut tally).await;
        let mut took = Vec::new();
        for index in 1..=releases {
            let (_, t) =
                release(&mut rollout, &spec, &proxy, &mut rng, index, true, &mut tally).await;
            took.push(t.as_secs_f64());
        }
        let unready = rollout.unready_requests().await;
        for (backend, n) in &unready {
            tally.violations.push(Violation {
                at: rollout.elapsed(),
                release: releases,
                what: format!("{n} requests reached {backend} with no ready pod"),
            });
        }
        let mean = took.iter().sum::<f64>() / took.len().max(1) as f64;
        println!(
            "\nchaos seed {seed}: {releases} releases under faults, {} SIGKILLs, {} API server restarts, \
             {} etcd pauses, Prometheus faults {:?}, {} unchanged re-applies, {} edits mid-analysis, \
             {} good canaries turned bad, {} Canaries deleted and applied again; outcomes {:?}; {} violations; \
             a release took {mean:.1} s on average under faults, {:.1} s without\n\
             | release | image | kind | SIGKILLs | outcome | took | canary weights seen |\n\
             |---|---|---|---|---|---|---|\n{}",
            tally.kills,
            tally.apiserver_restarts,
            tally.etcd_pauses,
            tally.prometheus,
            tally.reapplies,
            tally.edits,
            tally.flips,
            tally.deletions,
            tally.outcomes,
            tally.violations.len(),
            baseline.as_secs_f64(),
            tally.rows.join("\n")
        );
        let violations: Vec<String> = tally.violations.iter().map(|v| v.to_string()).collect();
        assert!(
            violations.is_empty(),
            "invariants violated:\n{}\n{}",
            violations.join("\n"),
            rollout.controller_log()
        );
        let primary = Rollout::image(&rollout.deployment("podinfo-primary").await);
        assert!(primary.starts_with(IMAGE), "{primary}");
    })
    .await;
}

#[tokio::test]
async fn releases_carried_through_repeated_sigkills_break_no_invariant() {
    let releases = env_or("SERIN_CHAOS_RELEASES", 3) as usize;
    let seed = env_or("SERIN_CHAOS_SEED", 7);
    chaos("e2e-chaos", releases, seed).await;
}
