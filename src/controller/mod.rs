//! The controller: watches Canaries, their targets, what serin owns and the configs the
//! targets use, and reconciles each Canary by observe → plan → act.

pub mod act;
pub mod observe;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use thiserror::Error;
use tracing::{info, instrument, warn};

use crate::analysis::{
    checks,
    compare::{self, Judgement},
};
use crate::api::Canary;
use crate::rollout::plan::{self, Input, Verdict};
use crate::telemetry::{AnalysisStatus, DeploymentStrategy, Metrics, Outcome, Readiness};

pub const FINALIZER: &str = "serin.dev/finalizer";

#[derive(Debug, Error)]
pub enum Error {
    #[error("reading from the API server: {0}")]
    Read(#[source] kube::Error),
    #[error("writing {0} {1}: {2}")]
    Write(&'static str, String, #[source] kube::Error),
    #[error(transparent)]
    Route(#[from] crate::router::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Read(_) => "read",
            Error::Write(..) => "write",
            Error::Route(_) => "route",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Settings of `serin run`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Prometheus used by builtin metrics and templates without an address.
    pub metrics_server: String,
    /// Watch only this namespace.
    pub namespace: Option<String>,
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Metrics,
}

/// Time since the current analysis started (zero before it starts).
fn since_analysis_start(canary: &Canary, now: Timestamp) -> Duration {
    canary
        .status
        .as_ref()
        .and_then(|s| s.analysis_start_time.as_ref())
        .map(|t| now.duration_since(t.0).unsigned_abs())
        .unwrap_or_default()
}

/// Whether the canary has had traffic for less than the longest metric window.
fn in_first_window(canary: &Canary, now: Timestamp) -> bool {
    let window = canary
        .spec
        .analysis
        .metrics
        .iter()
        .map(|m| m.interval())
        .max()
        .unwrap_or_default();
    let exposed = since_analysis_start(canary, now);
    exposed < window
}

/// Combines the checks of one round. Missing data while the canary has had traffic for
/// less than the longest metric window is a wait, not a failure: the window cannot hold
/// the canary's requests yet. After that, no data fails the check like any other.
fn verdict_of(canary: &Canary, results: &[checks::MetricResult], now: Timestamp) -> Verdict {
    let failures: Vec<&str> = results
        .iter()
        .filter_map(|r| r.failure.as_deref())
        .collect();
    if failures.is_empty() {
        return Verdict::Pass;
    }
    let only_no_data = results.iter().all(|r| r.failure.is_none() || r.no_data);
    if only_no_data && in_first_window(canary, now) {
        Verdict::Hold(format!(
            "waiting for the first metric window: {}",
            failures.join("; ")
        ))
    } else {
        Verdict::Fail(failures.join("; "))
    }
}

#[instrument(skip(canary, ctx), fields(canary = %canary.name_any(), namespace = canary.namespace().unwrap_or_default()))]
async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let ns = canary.namespace().unwrap_or_default();
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, canary, |event| async {
        match event {
            Finalizer::Apply(canary) => apply(&canary, &ctx).await,
            Finalizer::Cleanup(canary) => cleanup(&canary, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// Adds the statistical judgement (compared metrics) and the sequential test to the
/// threshold checks' verdict. A sequential rollback overrides everything; a failed
/// judgement fails the round; a marginal one holds a round that would have passed.
async fn judged(ctx: &Context, canary: &Canary, verdict: Verdict, now: Timestamp) -> Verdict {
    let address = &ctx.config.metrics_server;
    let since_start = since_analysis_start(canary, now);
    match compare::early_rollback(canary, address, since_start).await {
        Ok(Some(reason)) => return Verdict::Rollback(reason),
        Ok(None) => {}
        Err(e) => return fail_with(verdict, format!("sequential test: {e}")),
    }
    match compare::judge(&ctx.client, canary, address, since_start).await {
        None | Some(Judgement::Pass) => verdict,
        Some(Judgement::Fail(reason)) => fail_with(verdict, reason),
        Some(Judgement::NoData(reason)) if in_first_window(canary, now) => match verdict {
            Verdict::Pass => Verdict::Hold(format!("waiting for samples: {reason}")),
            other => other,
        },
        Some(Judgement::NoData(reason)) => fail_with(verdict, reason),
        Some(Judgement::Marginal(reason)) => match verdict {
            Verdict::Pass => Verdict::Hold(reason),
            other => other,
        },
    }
}

fn fail_with(verdict: Verdict, reason: String) -> Verdict {
    match verdict {
        Verdict::Fail(existing) => Verdict::Fail(format!("{existing}; {reason}")),
        Verdict::Rollback(r) => Verdict::Rollback(r),
        Verdict::Pass | Verdict::Hold(_) => Verdict::Fail(reason),
    }
}

/// A spec the schema accepts but this controller cannot carry out: said in the status
/// (Ready=False, reason InvalidSpec) and in a Warning event, and nothing is changed.
async fn reject(canary: &Canary, ctx: &Context, why: String) -> Result<Action> {
    let mut status = canary.status.clone().unwrap_or_default();
    if status.message.as_deref() != Some(why.as_str()) {
        let now = Timestamp::now();
        status.message = Some(why.clone());
        status.observed_generation = canary.metadata.generation;
        crate::rollout::conditions::set(
            &mut status.conditions,
            crate::rollout::conditions::READY,
            false,
            crate::rollout::conditions::reasons::INVALID_SPEC,
            &why,
            now,
            canary.metadata.generation,
        );
        act::write_status(&ctx.client, canary, &status).await?;
        let event = plan::Event {
            warning: true,
            reason: crate::rollout::conditions::reasons::INVALID_SPEC,
            message: why,
        };
        act::publish(ctx, canary, &event).await;
    }
    Ok(Action::await_change())
}

async fn apply(canary: &Canary, ctx: &Context) -> Result<Action> {
    if canary.provider() != crate::api::Provider::Istio {
        let provider = canary.provider().as_str();
        return reject(
            canary,
            ctx,
            format!("provider {provider} is not supported by this serin release yet; use provider: istio"),
        )
        .await;
    }
    let snapshot = observe::observe(&ctx.client, canary).await?;
    let now = Timestamp::now();
    let ready = snapshot
        .observed
        .target
        .as_ref()
        .is_some_and(|t| t.ready.is_ready());
    let verdict = if ready && plan::analysis_due(canary, now) {
        let results = checks::run(&ctx.client, canary, &ctx.config.metrics_server).await;
        for r in &results {
            info!(metric = %r.name, value = ?r.value, failure = ?r.failure, "metric check");
            if let Some(value) = r.value {
                ctx.metrics.set_metric_analysis(
                    &canary.spec.target_ref.name,
                    &canary.namespace().unwrap_or_default(),
                    &r.name,
                    value,
                );
            }
        }
        let verdict = verdict_of(canary, &results, now);
        Some(judged(ctx, canary, verdict, now).await)
    } else {
        None
    };
    let plan = plan::plan(&Input {
        canary,
        observed: &snapshot.observed,
        gates: snapshot.gates,
        verdict,
        now,
    });
    let mut plan = plan;
    // Tracked configs are recorded so that their watches wake this Canary.
    let hashes = observe::config_hashes(&snapshot.configs);
    plan.status.tracked_configs = (!hashes.is_empty()).then_some(hashes);
    act::act(ctx, canary, &snapshot, &plan).await?;
    record(ctx, canary, &plan.status);
    info!(phase = %plan.status.phase, weight = plan.status.canary_weight, failed_checks = plan.status.failed_checks, "reconciled");
    Ok(Action::requeue(plan.requeue))
}

/// Updates the Flagger-compatible series after a reconcile.
fn record(ctx: &Context, canary: &Canary, status: &crate::api::CanaryStatus) {
    let (name, ns) = (
        canary.spec.target_ref.name.as_str(),
        canary.namespace().unwrap_or_default(),
    );
    ctx.metrics.set_phase(name, &ns, status.phase);
    let weight = i64::from(status.canary_weight);
    ctx.metrics.set_weight(name, &ns, 100 - weight, weight);
    let before = canary.status.as_ref().map(|s| s.phase);
    if before != Some(status.phase) {
        let analysis = if canary.spec.skip_analysis {
            AnalysisStatus::Skipped
        } else {
            AnalysisStatus::Completed
        };
        let outcome = match status.phase {
            crate::api::CanaryPhase::Succeeded => Some(Outcome::Succeeded),
            crate::api::CanaryPhase::Failed => Some(Outcome::Failed),
            _ => None,
        };
        if let Some(outcome) = outcome {
            ctx.metrics
                .inc_outcome(name, &ns, DeploymentStrategy::Canary, analysis, outcome);
            if let Some(start) = &status.analysis_start_time {
                let seconds = jiff::Timestamp::now().duration_since(start.0).as_secs_f64();
                ctx.metrics.observe_duration(name, &ns, seconds);
            }
        }
    }
}

/// On deletion: with `revertOnDeletion`, give the traffic back to the target (scaled up,
/// routed 100%) before the owned objects are garbage collected.
async fn cleanup(canary: &Canary, ctx: &Context) -> Result<Action> {
    if !canary.spec.revert_on_deletion {
        return Ok(Action::await_change());
    }
    let snapshot = observe::observe(&ctx.client, canary).await?;
    let Some(target) = &snapshot.target else {
        return Ok(Action::await_change());
    };
    let replicas = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    if replicas == 0 {
        let desired =
            crate::workloads::deployment::desired_replicas(target, snapshot.primary.as_ref());
        act::scale_target(&ctx.client, canary, desired).await?;
        return Err(Error::Finalizer(
            "waiting for the target to scale up before reverting".into(),
        ));
    }
    if let Some(t) = &snapshot.observed.target
        && !t.ready.is_ready()
    {
        return Err(Error::Finalizer(
            "waiting for the target to be ready before reverting".into(),
        ));
    }
    // The apex Service now selects the target's pods and is left in place.
    let services: Api<Service> =
        Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    let selector = crate::workloads::deployment::target_selector(target);
    let patch =
        serde_json::json!({"metadata": {"ownerReferences": null}, "spec": {"selector": selector}});
    services
        .patch(
            canary.service_name(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(|e| Error::Write("Service", canary.service_name().to_string(), e))?;
    act::write_routes(&ctx.client, canary, 100).await?;
    info!("reverted: the target serves all traffic");
    Ok(Action::await_change())
}

fn error_policy(canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.label());
    warn!(canary = %canary.name_any(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// Canaries in `ns` whose target is `name`.
fn canaries_targeting(
    store: &Store<Canary>,
    ns: Option<String>,
    name: &str,
) -> Vec<ObjectRef<Canary>> {
    let name = name.trim_end_matches("-primary");
    store
        .state()
        .iter()
        .filter(|c| c.namespace() == ns && c.spec.target_ref.name == name)
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Canaries in `ns` that track the config `key` (`configmap/name`).
fn canaries_tracking(
    store: &Store<Canary>,
    ns: Option<String>,
    key: &str,
) -> Vec<ObjectRef<Canary>> {
    store
        .state()
        .iter()
        .filter(|c| {
            c.namespace() == ns
                && c.status
                    .as_ref()
                    .and_then(|s| s.tracked_configs.as_ref())
                    .is_some_and(|t: &BTreeMap<String, String>| t.contains_key(key))
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until SIGTERM or Ctrl-C. `ready` is set once the Canary cache
/// has synced.
pub async fn run(client: Client, config: Config, metrics: Metrics, ready: Readiness) {
    let ns = config.namespace.clone();
    let canaries: Api<Canary> = api(&client, &ns);
    let ctx = Arc::new(Context {
        client: client.clone(),
        config,
        metrics: metrics.clone(),
    });
    let controller = Controller::new(canaries, watcher::Config::default().any_semantic());
    let store = controller.store();
    let synced = store.clone();
    tokio::spawn(async move {
        if synced.wait_until_ready().await.is_ok() {
            ready.set_ready(true);
        }
        // Canaries per namespace, as Flagger counts them.
        loop {
            let mut totals: BTreeMap<String, i64> = BTreeMap::new();
            for c in synced.state() {
                *totals.entry(c.namespace().unwrap_or_default()).or_default() += 1;
            }
            for (ns, total) in totals {
                metrics.set_total(&ns, total);
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
    let (targets, cms, secrets) = (store.clone(), store.clone(), store.clone());
    info!(namespace = ?ns, "serin controller starting");
    controller
        .owns(api::<Service>(&client, &ns), watcher::Config::default())
        .watches(
            api::<Deployment>(&client, &ns),
            watcher::Config::default(),
            move |d| canaries_targeting(&targets, d.namespace(), &d.name_any()),
        )
        .watches_stream(
            watcher(
                api::<PartialObjectMeta<ConfigMap>>(&client, &ns),
                watcher::Config::default(),
            )
            .touched_objects(),
            move |m| canaries_tracking(&cms, m.namespace(), &format!("configmap/{}", m.name_any())),
        )
        .watches_stream(
            watcher(
                api::<PartialObjectMeta<Secret>>(&client, &ns),
                watcher::Config::default(),
            )
            .touched_objects(),
            move |m| {
                canaries_tracking(&secrets, m.namespace(), &format!("secret/{}", m.name_any()))
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
        })
        .await;
}
