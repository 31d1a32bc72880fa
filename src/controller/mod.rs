//! The controller: watches Canaries, their targets, what serin owns and the configs the
//! targets use, and reconciles each Canary by observe → plan → act.

pub mod act;
pub mod client;
mod evidence;
pub mod leader;
pub mod observe;
pub mod pacing;
mod report;
pub mod stores;
pub mod superseded;

mod error;
pub use error::{Error, Result, chain};

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use evidence::{call_webhooks, conformance, gather};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        finalizer::{Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::{debug, info, instrument, warn};

use crate::analysis::{checks, compare};
use crate::api::{Canary, CanaryPhase, WebhookType};
use crate::gates::{self, webhooks};
use crate::rollout::plan::{self, Input};
use crate::rollout::verdict::{self, Evidence};
use crate::telemetry::{Metrics, Readiness};

pub const FINALIZER: &str = "serin.dev/finalizer";

/// Settings of `serin run`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Prometheus used by builtin metrics and templates without an address.
    pub metrics_server: String,
    /// Provider of Canaries that set none (`--provider`).
    pub default_provider: crate::api::Provider,
    /// Watch only this namespace.
    pub namespace: Option<String>,
    /// The default alert provider, retries and the notification series.
    pub notify: crate::notify::Settings,
    /// How many Canaries reconcile at once (`--concurrency`); 0 is unbounded.
    pub concurrency: u16,
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub metrics: Metrics,
    /// Delivers the notifications recorded in status, off the reconcile's path.
    pub notifier: Arc<crate::notify::Dispatcher>,
    /// What reconciles read and compare their writes with.
    pub stores: Arc<stores::Stores>,
    /// The Canary versions serin wrote over (shared with the notifier, which writes too).
    pub superseded: Arc<superseded::Superseded>,
    /// When each Canary's status was last written: progress messages are paced.
    pub pacing: pacing::Pacing,
    /// The reconcile slots (`--concurrency`), taken first come, first served; `None`:
    /// unbounded.
    pub slots: Option<tokio::sync::Semaphore>,
    /// The Canaries' cache: a reconcile that waited for its slot acts on the newest.
    pub canaries: kube::runtime::reflector::Store<Canary>,
}

#[instrument(skip(canary, ctx), fields(canary = %canary.name_any(), namespace = canary.namespace().unwrap_or_default()))]
async fn reconcile(canary: Arc<Canary>, ctx: Arc<Context>) -> Result<Action> {
    // The slots are handed out in the order reconciles were asked for: kube-runtime's
    // own limit picks among waiting requests in hash order, which under sustained load
    // starves some Canaries (never reconciled) and delays detections behind later
    // requests. The runner itself is unbounded; one object never reconciles twice at
    // once. How long a due analysis tick waited is told apart from the other reconciles
    // (`serin_reconcile_slot_wait_seconds{lane}`).
    let _slot = match &ctx.slots {
        Some(slots) => {
            let lane = if plan::analysis_due(&canary, Timestamp::now()) {
                "tick"
            } else {
                "other"
            };
            let waited = std::time::Instant::now();
            let Ok(slot) = slots.acquire().await else {
                // Closed on SIGTERM: what waited is left to the next leader.
                return Ok(Action::await_change());
            };
            ctx.metrics
                .observe_slot_wait(lane, waited.elapsed().as_secs_f64());
            Some(slot)
        }
        None => None,
    };
    // The Canary may have changed while this reconcile waited.
    let canary = ctx
        .canaries
        .get(&kube::runtime::reflector::ObjectRef::from_obj(&*canary))
        .unwrap_or(canary);
    let _timer = ctx.metrics.reconcile_started();
    let ns = canary.namespace().unwrap_or_default();
    let api: Api<Canary> = Api::namespaced(ctx.client.clone(), &ns);
    let canary = with_default_provider(canary, ctx.config.default_provider);
    finalizer(&api, FINALIZER, canary, |event| async {
        match event {
            Finalizer::Apply(canary) => apply(&canary, &ctx).await,
            Finalizer::Cleanup(canary) => cleanup(&canary, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The Canary as the controller acts on it: one without `spec.provider` takes the
/// controller's default (`--provider`), as Flagger's `-mesh-provider` does.
fn with_default_provider(canary: Arc<Canary>, default: crate::api::Provider) -> Arc<Canary> {
    if canary.spec.provider.is_some() {
        return canary;
    }
    let mut canary = Arc::unwrap_or_clone(canary);
    canary.spec.provider = Some(default);
    Arc::new(canary)
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
        ctx.superseded.record(canary);
        let event = plan::Event {
            reason: crate::rollout::conditions::reasons::INVALID_SPEC,
            severity: plan::Severity::Error,
            revision: None,
            weight: status.canary_weight,
            metric: None,
            value: None,
            key: format!(
                "{}/{}/{}/invalid/{why}",
                canary.namespace().unwrap_or_default(),
                canary.name_any(),
                canary.uid().unwrap_or_default()
            ),
            message: why,
            muted: false,
        };
        act::publish(ctx, canary, &event).await;
    }
    Ok(Action::await_change())
}

async fn apply(canary: &Canary, ctx: &Context) -> Result<Action> {
    if ctx.superseded.is_stale(canary) {
        // The cache has not caught up with serin's last status write: acting on this
        // version would call webhooks whose answers the refused write would forget. The
        // watch event of the newer version reconciles again.
        debug!("the cached Canary is older than serin's last write; waiting for the newer one");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if crate::router::for_provider(canary.provider()).is_none() {
        let provider = canary.provider().as_str();
        return reject(
            canary,
            ctx,
            format!("provider {provider} is not supported by this serin release yet; use istio, gatewayapi, linkerd or kubernetes"),
        )
        .await;
    }
    let mut snapshot = observe::observe(&ctx.client, &ctx.stores, canary).await?;
    let now = Timestamp::now();
    // A Gateway API route takes effect once its parents accept it; until then the
    // checks would judge a split that is not served, and no step is taken.
    let route_acceptance = observe::route_acceptance(&ctx.client, &ctx.stores, canary).await?;
    let held = matches!(route_acceptance, Some(Err(_)));
    let needs = plan::needs(canary, &snapshot.observed, now);
    // The tests of the revision under analysis, or just promoted.
    if let Some(run) = needs.conformance
        && let Some(revision) = canary
            .status
            .as_ref()
            .and_then(|s| s.last_applied_spec.as_deref())
    {
        snapshot.observed.conformance = conformance(&ctx.client, canary, revision, run).await?;
    }
    // Webhooks and checks run concurrently; each Canary reconciles on its own task, so a
    // webhook that hangs to its timeout delays only its own Canary.
    // The raw counters of the sequential test, read at every reconcile of the analysis
    // (the plan evaluates the test on them).
    let counters = if needs.sequential && !held {
        Some(crate::analysis::counts::read(canary, &ctx.config.metrics_server).await)
    } else {
        None
    };
    let (verdict, webhooks) = futures::join!(
        async {
            if needs.analysis && !held {
                Some(verdict::decide(
                    &gather(ctx, canary, now, counters.as_ref()).await,
                ))
            } else {
                None
            }
        },
        call_webhooks(canary, needs.webhooks),
    );
    let planned_at = if needs == plan::Needs::default() {
        now
    } else {
        // The answers are as of now, not as of the start of the calls.
        Timestamp::now()
    };
    if needs.analysis && !held {
        // How late this analysis tick is, when it started and once its answers are in
        // (`serin_analysis_tick_lateness_seconds` has the total).
        tracing::debug!(target: "serin::ticks", late_at_start = ?report::past_due(canary, now), answers_took = planned_at.duration_since(now).as_secs_f64(), "analysis tick");
    }
    let plan = plan::plan(&Input {
        canary,
        observed: &snapshot.observed,
        gates: snapshot.gates,
        verdict,
        webhooks,
        counters: counters.clone(),
        now: planned_at,
    });
    let plan = match &route_acceptance {
        Some(acceptance) => crate::rollout::routes::hold_until_accepted(
            canary.status.as_ref(),
            plan,
            acceptance.as_ref().err().map(String::as_str),
            now,
            canary.metadata.generation,
        ),
        None => plan,
    };
    let mut plan = plan;
    // Tracked configs are recorded so that their watches wake this Canary.
    let hashes = observe::config_hashes(&snapshot.configs);
    plan.status.tracked_configs = (!hashes.is_empty()).then_some(hashes);
    // Notifications are recorded with the transition that causes them, in one write.
    let image = snapshot.target.as_ref().and_then(|t| {
        t.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .containers
            .first()?
            .image
            .clone()
    });
    crate::notify::enqueue(
        &mut plan.status,
        canary,
        &plan.events,
        image.as_deref(),
        ctx.notifier.default_severity(),
        now,
    );
    // A change of the progress message alone waits for its turn (see `pacing`).
    if let Some(wait) = ctx.pacing.hold(canary, &plan, std::time::Instant::now())
        && let Some(current) = &canary.status
    {
        plan.status = current.clone();
        plan.requeue = plan.requeue.min(wait);
    }
    act::act(ctx, canary, &snapshot, &plan).await?;
    if !plan.status.pending_notifications.is_empty() {
        ctx.notifier.offer(canary);
    }
    report::record(ctx, canary, &plan.status);
    if let (Some(Ok(now)), Some(start)) = (
        &counters,
        plan.status
            .sequential_test
            .as_ref()
            .and_then(|t| t.start.as_ref()),
    ) {
        // The evidence against the canary, as an analysis metric beside the checks'
        // values (`sequential-test`), at every evaluation.
        let evaluation =
            crate::analysis::counts::evaluate(start, now, &canary.spec.analysis.sequential());
        ctx.metrics.set_metric_analysis(
            &canary.spec.target_ref.name,
            &canary.namespace().unwrap_or_default(),
            "sequential-test",
            evaluation.against,
        );
    }
    // A reconcile that changed nothing (a Canary waiting, or idle) is logged at debug:
    // a thousand waiting Canaries would otherwise write a line each per poll.
    if canary.status.as_ref() == Some(&plan.status) {
        debug!(phase = %plan.status.phase, weight = plan.status.canary_weight, failed_checks = plan.status.failed_checks, "reconciled; nothing changed");
    } else {
        info!(phase = %plan.status.phase, weight = plan.status.canary_weight, failed_checks = plan.status.failed_checks, "reconciled");
    }
    Ok(Action::requeue(after_writes(plan.requeue, planned_at)))
}

/// The shortest requeue: a plan whose writes took longer than its requeue looks again
/// at once, but not in a tight loop.
const MIN_REQUEUE: Duration = Duration::from_millis(100);

/// The plan's requeue counts from the moment it was made (`planned_at`), not from the
/// end of its writes: a tick due an interval after the last one stays due then, however
/// long the API server took to take this one's writes.
fn after_writes(requeue: Duration, planned_at: Timestamp) -> Duration {
    let spent = Duration::try_from(Timestamp::now().duration_since(planned_at)).unwrap_or_default();
    requeue.saturating_sub(spent).max(MIN_REQUEUE)
}

/// On deletion: with `revertOnDeletion`, give the traffic back to the target (scaled up,
/// routed 100%) before the owned objects are garbage collected.
async fn cleanup(canary: &Canary, ctx: &Context) -> Result<Action> {
    ctx.superseded.forget(canary);
    ctx.pacing.forget(canary);
    if !canary.spec.revert_on_deletion {
        return Ok(Action::await_change());
    }
    let snapshot = observe::observe(&ctx.client, &ctx.stores, canary).await?;
    let Some(target) = &snapshot.target else {
        return Ok(Action::await_change());
    };
    let replicas = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    if replicas == 0 {
        let desired =
            crate::workloads::deployment::desired_replicas(target, snapshot.primary.as_ref());
        act::scale_target(&ctx.client, canary, desired).await?;
        return Err(Error::Revert(
            "waiting for the target to scale up before giving it the traffic",
        ));
    }
    if let Some(t) = &snapshot.observed.target
        && !t.ready.is_ready()
    {
        return Err(Error::Revert(
            "waiting for the target to be ready before giving it the traffic",
        ));
    }
    // The Deployment's status can still count pods that are being deleted (the target
    // was scaled down moments ago): the traffic moves only to pods that serve.
    let pods: Api<Pod> =
        Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    let selector = crate::workloads::deployment::target_selector(target)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Read)?;
    if let plan::Readiness::NotReady(why) = crate::workloads::deployment::pods_serving(
        &pods.items,
        replicas,
        canary.spec.analysis.canary_ready_threshold(),
    ) {
        info!(%why, "waiting for the target's pods before giving them the traffic");
        return Err(Error::Revert(
            "waiting for the target's pods to be ready before giving them the traffic",
        ));
    }
    // The apex Service now selects the target's pods and is left in place; the routes
    // send everything to the target until they are garbage collected with the Canary.
    let provider = canary.provider();
    let router = crate::router::for_provider(provider).ok_or(Error::Route(
        crate::router::Error::Unsupported(provider.as_str()),
    ))?;
    let objects = router.revert(canary, &act::backends(target));
    crate::router::apply(
        &ctx.client,
        &canary.namespace().unwrap_or_default(),
        &objects,
    )
    .await?;
    info!("reverted: the target serves all traffic");
    Ok(Action::await_change())
}

fn error_policy(canary: Arc<Canary>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_conflict() {
        tracing::debug!(canary = %canary.name_any(), "status changed since read; planning again");
        return Action::requeue(Duration::from_millis(200));
    }
    ctx.metrics.reconcile_failed(error.label());
    warn!(canary = %canary.name_any(), error = %chain(error), kind = error.label(), "reconcile failed");
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

pub(crate) fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
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
    let superseded = Arc::new(superseded::Superseded::default());
    let notifier =
        crate::notify::Dispatcher::new(client.clone(), config.notify.clone(), superseded.clone());
    let (stores, watches) = stores::Stores::new(&client, &ns);
    let slots = (config.concurrency > 0)
        .then(|| tokio::sync::Semaphore::new(usize::from(config.concurrency)));
    // The Canaries' cache, without their managed fields (serin's status writes alone
    // list every status field there).
    let (store, writer) = kube::runtime::reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        config,
        metrics: metrics.clone(),
        notifier,
        stores,
        superseded,
        pacing: pacing::Pacing::default(),
        slots,
        canaries: store.clone(),
    });
    let canary_stream = watcher(canaries, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(stores::trim)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(canary_stream, store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(0));
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
    // On SIGTERM (or Ctrl-C) the controller stops taking work, and reconciles still
    // waiting for a slot end without acting.
    let closing = ctx.clone();
    let stop = async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if let Some(slots) = &closing.slots {
            slots.close();
        }
    };
    let (targets, cms, secrets) = (store.clone(), store.clone(), store.clone());
    info!(namespace = ?ns, "serin controller starting");
    controller
        .owns_stream(watches.services)
        .owns(
            api::<k8s_openapi::api::batch::v1::Job>(&client, &ns),
            watcher::Config::default().labels(gates::jobs::CANARY_LABEL),
        )
        .watches_stream(watches.deployments, move |d| {
            canaries_targeting(&targets, d.namespace(), &d.name_any())
        })
        .watches_stream(watches.configmaps, move |m| {
            canaries_tracking(&cms, m.namespace(), &format!("configmap/{}", m.name_any()))
        })
        .watches_stream(watches.secrets, move |m| {
            canaries_tracking(&secrets, m.namespace(), &format!("secret/{}", m.name_any()))
        })
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // A watch that fails (a missing permission, an unreachable API server)
                // stops every Canary from being seen: say so.
                Err(kube::runtime::controller::Error::QueueError(e)) => {
                    warn!(error = %chain(&e), "watching failed")
                }
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
                Ok(_) => {}
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Provider;

    fn canary(provider: Option<Provider>) -> Arc<Canary> {
        let mut canary = Canary::new("podinfo", Default::default());
        canary.spec.provider = provider;
        Arc::new(canary)
    }

    #[test]
    fn a_requeue_counts_from_the_plan_not_from_the_end_of_its_writes() {
        let planned = Timestamp::now() - jiff::SignedDuration::from_secs(3);
        let requeue = after_writes(Duration::from_secs(10), planned);
        assert!(requeue <= Duration::from_secs(7), "{requeue:?}");
        assert!(requeue > Duration::from_secs(6), "{requeue:?}");
        let long_ago = Timestamp::now() - jiff::SignedDuration::from_secs(20);
        assert_eq!(after_writes(Duration::from_secs(10), long_ago), MIN_REQUEUE);
    }

    #[test]
    fn a_canary_without_a_provider_takes_the_controllers_default() {
        let canary = with_default_provider(canary(None), Provider::Linkerd);
        assert_eq!(canary.provider(), Provider::Linkerd);
    }

    #[test]
    fn a_canary_that_names_its_provider_keeps_it() {
        let canary = with_default_provider(canary(Some(Provider::Istio)), Provider::Linkerd);
        assert_eq!(canary.provider(), Provider::Istio);
    }
}
