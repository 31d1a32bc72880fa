//! Act: make the cluster match a plan. The order keeps the invariants when the
//! controller is killed between any two writes: the primary first, then the routes,
//! then the status, and only then the target's replicas, so that traffic is never
//! routed to a canary that is being scaled down, and a restart re-applies from status.

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        core::v1::{ConfigMap, Secret, Service},
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
use crate::rollout::plan::{Plan, PrimaryAction, TargetScale};
use crate::router::{TrafficRouter, Weights, istio::IstioRouter};
use crate::workloads::deployment::{build_primary, build_services, desired_replicas};

pub const FIELD_MANAGER: &str = "serin";

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
    if action == PrimaryAction::Promote
        && snapshot
            .observed
            .primary
            .as_ref()
            .and_then(|p| p.revision.as_deref())
            == Some(revision)
    {
        return Ok(());
    }
    copy_configs(client, canary, snapshot).await?;
    let replicas = if canary.spec.autoscaler_ref.is_some() && snapshot.primary.is_some() {
        // The primary's autoscaler owns its replica count once it exists.
        snapshot
            .primary
            .as_ref()
            .and_then(|p| p.spec.as_ref()?.replicas)
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

/// The Services and, with `autoscalerRef`, the primary's autoscaler.
async fn write_services(client: &Client, canary: &Canary, target: &Deployment) -> Result<()> {
    let ns = canary.namespace().unwrap_or_default();
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    for service in build_services(canary, target) {
        api.patch(
            &service.name_any(),
            &apply_params(),
            &Patch::Apply(&service),
        )
        .await
        .map_err(|e| Error::Write("Service", service.name_any(), e))?;
    }
    if let Some(aref) = &canary.spec.autoscaler_ref {
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
        if let Some(hpa) = hpas.get_opt(&aref.name).await.map_err(Error::Read)? {
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
            hpas.patch(&copy.name_any(), &apply_params(), &Patch::Apply(&copy))
                .await
                .map_err(|e| Error::Write("HorizontalPodAutoscaler", copy.name_any(), e))?;
        }
    }
    Ok(())
}

pub async fn write_routes(client: &Client, canary: &Canary, canary_weight: i32) -> Result<()> {
    let weights = Weights::with_canary(u32::try_from(canary_weight).unwrap_or(0));
    match canary.provider() {
        crate::api::Provider::Istio => IstioRouter
            .apply(client, canary, weights)
            .await
            .map_err(Error::Route),
        other => Err(Error::Route(crate::router::Error::Unsupported(
            other.as_str(),
        ))),
    }
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

pub async fn write_status(client: &Client, canary: &Canary, status: &CanaryStatus) -> Result<()> {
    let api: Api<Canary> = Api::namespaced(client.clone(), &canary.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": API_VERSION, "kind": "Canary", "status": status});
    api.patch_status(&canary.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::Write("Canary", canary.name_any(), e))?;
    Ok(())
}

fn target_replicas(target: &Deployment) -> i32 {
    target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Applies the plan.
pub async fn act(ctx: &Context, canary: &Canary, snapshot: &Snapshot, plan: &Plan) -> Result<()> {
    let client = &ctx.client;
    let Some(target) = &snapshot.target else {
        return write_status(client, canary, &plan.status).await;
    };
    if plan.primary != PrimaryAction::Keep {
        write_primary(client, canary, snapshot, plan.primary).await?;
    }
    if snapshot.primary.is_some() || plan.primary == PrimaryAction::Bootstrap {
        write_services(client, canary, target).await?;
        write_routes(client, canary, plan.status.canary_weight).await?;
    }
    if canary.status.as_ref() != Some(&plan.status) {
        write_status(client, canary, &plan.status).await?;
    }
    match plan.target {
        TargetScale::Up if target_replicas(target) == 0 => {
            scale_target(
                client,
                canary,
                desired_replicas(target, snapshot.primary.as_ref()),
            )
            .await?
        }
        TargetScale::Down if target_replicas(target) != 0 => {
            scale_target(client, canary, 0).await?
        }
        _ => {}
    }
    for event in &plan.events {
        publish(ctx, canary, event).await;
    }
    Ok(())
}

/// Records an event on the Canary and logs it. Each transition is its own Event:
/// kube's `Recorder` folds events with the same reason into one series that keeps the
/// first note, which would hide the message of every later failed check.
pub async fn publish(ctx: &Context, canary: &Canary, event: &crate::rollout::plan::Event) {
    let now = jiff::Timestamp::now();
    let reference = canary.object_ref(&());
    let ns = canary.namespace().unwrap_or_default();
    let record = k8s_openapi::api::events::v1::Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", canary.name_any(), now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        action: Some("Rollout".to_string()),
        reason: Some(event.reason.to_string()),
        note: Some(event.message.clone()),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.to_string()),
        event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            now,
        )),
        regarding: Some(reference),
        reporting_controller: Some("serin.dev/controller".to_string()),
        reporting_instance: Some(std::env::var("HOSTNAME").unwrap_or_else(|_| "serin".to_string())),
        ..Default::default()
    };
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = events.create(&Default::default(), &record).await {
        tracing::warn!(error = %e, reason = event.reason, "publishing an event failed");
    }
    if event.warning {
        tracing::warn!(canary = %canary.name_any(), reason = event.reason, message = %event.message, "event");
    } else {
        tracing::info!(canary = %canary.name_any(), reason = event.reason, message = %event.message, "event");
    }
}
