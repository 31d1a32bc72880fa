//! Act: make the cluster match a plan. The order keeps the invariants when the
//! controller is killed between any two writes: the status first (the decision is
//! durable before anything reflects it, and it is written only if the Canary has not
//! changed since it was read), then the primary, then the Services and routes, and only
//! then the target's replicas, so that traffic is never routed to a canary that is being
//! scaled down. Everything after the status is derived from status and observation, so
//! a restart re-applies it.

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Secret},
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams},
};
use serde_json::json;

use super::{
    Context, Error, Result,
    observe::{ConfigData, Snapshot},
};
use crate::api::{API_VERSION, Canary, CanaryStatus};
use crate::rollout::plan::{Plan, PrimaryAction, TargetScale, Traffic};
use crate::router::{self, Backends, Weights};
use crate::workloads::deployment::{
    build_primary, build_services, desired_replicas, primary_selector, promoted_replicas,
    target_selector,
};

pub use crate::router::FIELD_MANAGER;

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// `-primary` copies of the tracked ConfigMaps and Secrets, owned by the Canary.
async fn copy_configs(client: &Client, canary: &Canary, snapshot: &Snapshot) -> Result<()> {
    let ns = canary.namespace().unwrap_or_default();
    let owner = canary.controller_owner_ref(&()).map(|o| vec![o]);
    for data in snapshot.configs.values() {
        match data {
            ConfigData::ConfigMap(cm) => {
                let copy = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("{}-primary", cm.name_any())),
                        namespace: Some(ns.clone()),
                        owner_references: owner.clone(),
                        labels: cm.metadata.labels.clone(),
                        ..Default::default()
                    },
                    data: cm.data.clone(),
                    binary_data: cm.binary_data.clone(),
                    immutable: None,
                };
                let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
                api.patch(&copy.name_any(), &apply_params(), &Patch::Apply(&copy))
                    .await
                    .map_err(|e| Error::Write("ConfigMap", copy.name_any(), e))?;
            }
            ConfigData::Secret(s) => {
                let copy = Secret {
                    metadata: ObjectMeta {
                        name: Some(format!("{}-primary", s.name_any())),
                        namespace: Some(ns.clone()),
                        owner_references: owner.clone(),
                        labels: s.metadata.labels.clone(),
                        ..Default::default()
                    },
                    data: s
                        .data
                        .clone()
                        .map(|d| d.into_iter().map(|(k, v)| (k, ByteString(v.0))).collect()),
                    type_: s.type_.clone(),
                    ..Default::default()
                };
                let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
                api.patch(&copy.name_any(), &apply_params(), &Patch::Apply(&copy))
                    .await
                    .map_err(|e| Error::Write("Secret", copy.name_any(), e))?;
            }
        }
    }
    Ok(())
}

/// Creates the primary, or copies the target's template (and configs) into it.
async fn write_primary(
    client: &Client,
    canary: &Canary,
    snapshot: &Snapshot,
    action: PrimaryAction,
) -> Result<()> {
    let (Some(target), Some(revision)) = (&snapshot.target, snapshot.revision()) else {
        return Ok(());
    };
    let analysed = canary
        .status
        .as_ref()
        .and_then(|s| s.last_applied_spec.as_deref());
    if action == PrimaryAction::Promote
        && (snapshot
            .observed
            .primary
            .as_ref()
            .and_then(|p| p.revision.as_deref())
            == Some(revision)
            || (analysed.is_some() && analysed != Some(revision)))
    {
        // Already copied, or the target has moved on to a revision that was not
        // analysed: never copy that one.
        return Ok(());
    }
    copy_configs(client, canary, snapshot).await?;
    let replicas = if canary.spec.autoscaler_ref.is_some() && snapshot.primary.is_some() {
        // The primary's autoscaler owns its replica count once it exists.
        snapshot
            .primary
            .as_ref()
            .and_then(|p| p.spec.as_ref()?.replicas)
    } else if action == PrimaryAction::Promote {
        Some(promoted_replicas(target, snapshot.primary.as_ref()))
    } else {
        Some(desired_replicas(target, snapshot.primary.as_ref()))
    };
    let primary = build_primary(canary, target, replicas, revision, &snapshot.tracked());
    let api: Api<Deployment> =
        Api::namespaced(client.clone(), &canary.namespace().unwrap_or_default());
    api.patch(
        &canary.primary_name(),
        &apply_params(),
        &Patch::Apply(&primary),
    )
    .await
    .map_err(|e| Error::Write("Deployment", canary.primary_name(), e))?;
    Ok(())
}

/// The `-primary` and `-canary` Services and, with `autoscalerRef`, the primary's
/// autoscaler. The apex Service, what users reach, belongs to the router.
async fn write_services(ctx: &Context, canary: &Canary, target: &Deployment) -> Result<()> {
    let client = &ctx.client;
    let ns = canary.namespace().unwrap_or_default();
    // Written only where the cached Service does not hold them already.
    let services: Vec<serde_json::Value> = build_services(canary, target)
        .iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .collect();
    ctx.stores.apply(client, &ns, &services).await?;
    if let Some(aref) = &canary.spec.autoscaler_ref
        && let Some(hpa) = ctx.stores.autoscaler(client, &ns, &aref.name).await?
    {
        let mut spec = hpa.spec.clone().unwrap_or_default();
        spec.scale_target_ref.name = canary.primary_name();
        if let Some(replicas) = &aref.primary_scaler_replicas {
            if let Some(min) = replicas.min_replicas {
                spec.min_replicas = Some(min);
            }
            if let Some(max) = replicas.max_replicas {
                spec.max_replicas = max;
            }
        }
        let copy = HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some(format!("{}-primary", aref.name)),
                namespace: Some(ns.clone()),
                owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        };
        if let Ok(copy) = serde_json::to_value(&copy) {
            ctx.stores.apply(client, &ns, &[copy]).await?;
        }
    }
    Ok(())
}

/// The selectors of the primary's and the target's pods.
pub fn backends(target: &Deployment) -> Backends {
    Backends {
        primary: primary_selector(target),
        canary: target_selector(target),
    }
}

/// The apex Service and the routes, sending `canary_weight` percent to the canary.
pub async fn write_routes(
    ctx: &Context,
    canary: &Canary,
    target: &Deployment,
    canary_weight: u32,
    mirror: Option<u32>,
) -> Result<()> {
    let provider = canary.provider();
    let router = router::for_provider(provider)
        .ok_or(Error::Route(router::Error::Unsupported(provider.as_str())))?;
    let objects = router.desired(
        canary,
        &backends(target),
        Weights::with_canary(canary_weight).mirrored(mirror),
    );
    // Written only where the cached objects do not hold them already.
    ctx.stores
        .apply(
            &ctx.client,
            &canary.namespace().unwrap_or_default(),
            &objects,
        )
        .await?;
    Ok(())
}

pub async fn scale_target(client: &Client, canary: &Canary, replicas: i32) -> Result<()> {
    let api: Api<Deployment> =
        Api::namespaced(client.clone(), &canary.namespace().unwrap_or_default());
    let name = &canary.spec.target_ref.name;
    api.patch_scale(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .map_err(|e| Error::Write("Deployment", name.clone(), e))?;
    Ok(())
}

/// The status patch for `canary`, conditioned on the resourceVersion it was planned
/// from: the API server refuses it (409) if the Canary changed since, so a reconcile
/// that started from a stale cache never records (or acts on) a decision twice.
pub fn status_patch(canary: &Canary, status: &CanaryStatus) -> serde_json::Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "Canary",
        "metadata": {"resourceVersion": canary.resource_version()},
        "status": status,
    })
}

pub async fn write_status(client: &Client, canary: &Canary, status: &CanaryStatus) -> Result<()> {
    let api: Api<Canary> = Api::namespaced(client.clone(), &canary.namespace().unwrap_or_default());
    let patch = status_patch(canary, status);
    match api
        .patch_status(&canary.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Conflict),
        Err(e) => Err(Error::Write("Canary", canary.name_any(), e)),
    }
}

fn target_replicas(target: &Deployment) -> i32 {
    target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// One write of a plan, in the order [`steps`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Record the decision (only if the status changed).
    Status,
    Primary(PrimaryAction),
    /// The `-primary` and `-canary` Services.
    Services,
    /// The route, with this share to the canary.
    Routes(u32),
    ScaleTarget(i32),
    Events,
}

/// The writes that carry out `plan`, in order: the status first, so that a decision is
/// durable before any route or scale reflects it; the target's replicas last.
pub fn steps(
    canary: &Canary,
    target: Option<&Deployment>,
    primary: Option<&Deployment>,
    plan: &Plan,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if canary.status.as_ref() != Some(&plan.status) {
        steps.push(Step::Status);
    }
    let Some(target) = target else {
        return steps;
    };
    if plan.primary != PrimaryAction::Keep {
        steps.push(Step::Primary(plan.primary));
    }
    match plan.traffic {
        Traffic::Untouched => {}
        Traffic::Prepare => steps.push(Step::Services),
        Traffic::Route { canary_weight } => {
            steps.push(Step::Services);
            steps.push(Step::Routes(canary_weight));
        }
    }
    match plan.target {
        TargetScale::Up if target_replicas(target) == 0 => {
            steps.push(Step::ScaleTarget(desired_replicas(target, primary)));
        }
        TargetScale::Down if target_replicas(target) != 0 => steps.push(Step::ScaleTarget(0)),
        _ => {}
    }
    if !plan.events.is_empty() {
        steps.push(Step::Events);
    }
    steps
}

/// Applies the plan: the status first; then the other writes in order, and beside them
/// the events (they record the decision the status holds, and need not wait for the
/// routes: under a loaded API server that saves a round trip per step).
pub async fn act(ctx: &Context, canary: &Canary, snapshot: &Snapshot, plan: &Plan) -> Result<()> {
    let client = &ctx.client;
    // A scale this process wrote that the cache does not show yet counts as done.
    let as_scaled = snapshot.target.as_ref().and_then(|t| {
        let replicas = ctx.stores.scaled_since(t)?;
        let mut t = t.clone();
        t.spec.get_or_insert_default().replicas = Some(replicas);
        Some(t)
    });
    let target = as_scaled.as_ref().or(snapshot.target.as_ref());
    let steps = steps(canary, target, snapshot.primary.as_ref(), plan);
    if steps.first() == Some(&Step::Status) {
        write_status(client, canary, &plan.status).await?;
        ctx.superseded.record(canary);
        ctx.pacing.wrote(canary, std::time::Instant::now());
    }
    let writes = async {
        for step in &steps {
            match (*step, target) {
                (Step::Status | Step::Events, _) => {}
                (Step::Primary(action), _) => {
                    write_primary(client, canary, snapshot, action).await?
                }
                (Step::Services, Some(target)) => write_services(ctx, canary, target).await?,
                (Step::Routes(weight), Some(target)) => {
                    write_routes(ctx, canary, target, weight, plan.mirror).await?
                }
                (Step::ScaleTarget(replicas), _) => {
                    scale_target(client, canary, replicas).await?;
                    if let Some(planned_from) = &snapshot.target {
                        ctx.stores.record_scale(planned_from, replicas);
                    }
                }
                (Step::Services | Step::Routes(_), None) => {}
            }
        }
        Ok::<_, Error>(())
    };
    let events = async {
        if !steps.contains(&Step::Events) {
            return;
        }
        for event in &plan.events {
            if publish(ctx, canary, event).await {
                crate::gates::webhooks::spawn_event(
                    canary,
                    &plan.status,
                    &event.message,
                    event.warning(),
                );
            }
        }
    };
    let (written, ()) = futures::join!(writes, events);
    written?;
    if plan.post_rollout.is_some() {
        // The status write above succeeded, so this release ended in this reconcile:
        // the post-rollout webhooks are called once, in the background.
        crate::gates::webhooks::spawn_post_rollout(canary, &plan.status);
    }
    Ok(())
}

/// The name of the Kubernetes Event for `event`: derived from its idempotency key, so
/// the same transition planned twice is recorded once (the second create is refused).
pub fn event_name(canary: &Canary, event: &crate::rollout::plan::Event) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(event.key.as_bytes());
    format!("{}.{}", canary.name_any(), &hex::encode(digest)[..16])
}

/// Records an event on the Canary and logs it. Each transition is its own Event:
/// kube's `Recorder` folds events with the same reason into one series that keeps the
/// first note, which would hide the message of every later failed check.
/// Records an event; `false` when it was recorded before (the same transition planned
/// again), so that what follows from it (the `event` webhooks) happens once.
pub async fn publish(ctx: &Context, canary: &Canary, event: &crate::rollout::plan::Event) -> bool {
    let now = jiff::Timestamp::now();
    let reference = canary.object_ref(&());
    let ns = canary.namespace().unwrap_or_default();
    let record = k8s_openapi::api::events::v1::Event {
        metadata: ObjectMeta {
            name: Some(event_name(canary, event)),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        action: Some("Rollout".to_string()),
        reason: Some(event.reason.to_string()),
        note: Some(event_note(&event.message)),
        type_: Some(if event.warning() { "Warning" } else { "Normal" }.to_string()),
        event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            now,
        )),
        regarding: Some(reference),
        reporting_controller: Some("serin.dev/controller".to_string()),
        reporting_instance: Some(std::env::var("HOSTNAME").unwrap_or_else(|_| "serin".to_string())),
        ..Default::default()
    };
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ctx.client.clone(), &ns);
    match events.create(&Default::default(), &record).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Already recorded: this transition was planned before (a restart, or a
            // reconcile from a stale cache whose status write was refused).
            tracing::debug!(key = %event.key, "event already recorded");
            return false;
        }
        Err(e) => tracing::warn!(error = %e, reason = event.reason, "publishing an event failed"),
    }
    if event.warning() {
        tracing::warn!(canary = %canary.name_any(), reason = event.reason, message = %event.message, "event");
    } else {
        tracing::info!(canary = %canary.name_any(), reason = event.reason, message = %event.message, "event");
    }
    true
}

/// The API server refuses an Event whose note is longer than 1024 bytes (and the event
/// would be lost): a longer message, such as two metrics quoting a Prometheus error each,
/// is cut at a character boundary and ends with "…". Status, logs and notifications keep
/// the whole message.
fn event_note(message: &str) -> String {
    const LIMIT: usize = 1024;
    if message.len() <= LIMIT {
        return message.to_string();
    }
    let ellipsis = "…";
    let mut end = LIMIT - ellipsis.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_note_fits_the_api_servers_limit_of_1024_bytes() {
        assert_eq!(event_note("Holding at weight 10"), "Holding at weight 10");
        let long = "request-success-rate: Prometheus at http://prometheus:9090 is unreachable; "
            .repeat(30);
        let note = event_note(&long);
        assert!(note.len() <= 1024, "{} bytes", note.len());
        assert!(note.ends_with('…'));
        assert!(long.starts_with(note.trim_end_matches('…')));
        let wide = "é".repeat(1000);
        let note = event_note(&wide);
        assert!(note.len() <= 1024 && note.starts_with("éé") && note.ends_with('…'));
    }
    use crate::rollout::fixtures::{Clock, analysing_rev_b, plan_with, rev_b_ready};
    use crate::rollout::plan::{Gates, Verdict};
    use k8s_openapi::api::apps::v1::DeploymentSpec;

    fn deployment(replicas: i32) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_rollback_is_recorded_in_status_before_the_route_and_the_scale_reflect_it() {
        let clock = Clock::start();
        let canary = analysing_rev_b(Canary::test().threshold(1), &clock, 30, 60);
        let world = rev_b_ready();
        let plan = plan_with(
            &canary,
            &world,
            Gates::default(),
            Some(Verdict::Fail("error rate 20%".into())),
            clock.now(),
        );
        assert_eq!(plan.status.phase, crate::api::CanaryPhase::Failed);
        let steps = steps(&canary, Some(&deployment(2)), Some(&deployment(2)), &plan);
        assert_eq!(
            steps,
            vec![
                Step::Status,
                Step::Services,
                Step::Routes(0),
                Step::ScaleTarget(0),
                Step::Events
            ]
        );
    }

    #[test]
    fn a_step_is_recorded_in_status_before_the_route_sends_the_traffic() {
        let clock = Clock::start();
        let canary = analysing_rev_b(Canary::test(), &clock, 10, 60);
        let world = rev_b_ready();
        let plan = plan_with(
            &canary,
            &world,
            Gates::default(),
            Some(Verdict::Pass),
            clock.now(),
        );
        let steps = steps(&canary, Some(&deployment(2)), Some(&deployment(2)), &plan);
        let status = steps.iter().position(|s| *s == Step::Status);
        let route = steps.iter().position(|s| *s == Step::Routes(20));
        assert!(status.is_some() && status < route, "{steps:?}");
    }

    #[test]
    fn the_status_write_is_conditioned_on_the_version_it_was_planned_from() {
        let mut canary = Canary::test();
        canary.metadata.resource_version = Some("4711".into());
        let patch = status_patch(&canary, &CanaryStatus::default());
        assert_eq!(patch["metadata"]["resourceVersion"], "4711");
    }
}
