//! What the simulator reads each second: the Deployments, Services, VirtualServices,
//! HTTPRoutes, Gateways and Canaries ([`super::routing`] makes the routes of them).
//!
//! Two sources give them. Watches (one reflector per kind, started once) cost the API
//! server nothing between changes, but each store may lag the others by the time an event
//! takes to arrive. A consistent list (every kind listed at the resourceVersion of the
//! Deployments' list) is exact but costs a full list of every kind. Each second the
//! routes are made from the watches; only when they would send a request to a backend
//! without ready pods (a violation of the invariant the tests check) are they made again
//! from a consistent list, so that a route written after a pod became ready is never
//! paired with a Deployment read before it. A violation is therefore counted exactly as
//! a consistent read of the cluster shows it, and the watches carry the rest.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api, Client, Resource,
    api::{DynamicObject, ListParams, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::routing::{Routing, StatusUpdate, routing};
use crate::api::Canary;
use crate::controller::{
    api,
    stores::{dynamic_api, ready},
};

pub(super) fn virtual_service() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "networking.istio.io",
        "v1",
        "VirtualService",
    ))
}

pub(super) fn http_route() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ))
}

fn gateway() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
    ))
}

/// The objects the routes are made of.
#[derive(Default)]
pub struct World {
    pub deployments: Vec<Arc<Deployment>>,
    pub services: Vec<Arc<Service>>,
    pub virtual_services: Vec<Arc<DynamicObject>>,
    pub http_routes: Vec<Arc<DynamicObject>>,
    pub gateways: Vec<Arc<DynamicObject>>,
    pub canaries: Vec<Arc<Canary>>,
}

fn owned(namespace: Option<&str>) -> Option<String> {
    namespace.map(str::to_string)
}

fn arcs<K>(items: Vec<K>) -> Vec<Arc<K>> {
    items.into_iter().map(Arc::new).collect()
}

/// Every kind listed at one resourceVersion: the Deployments first (a quorum read), and
/// every other list at exactly their version. Lists read one after another at different
/// moments could pair a route written after a pod became ready with the Deployment read
/// before it, and count requests to "unready" pods that no real mesh would have sent.
pub async fn listed(client: &Client, namespace: Option<&str>) -> kube::Result<World> {
    let ns = owned(namespace);
    let deployments = api::<Deployment>(client, &ns)
        .list(&ListParams::default())
        .await?;
    let lp = match deployments.metadata.resource_version.as_deref() {
        Some(rv) if !rv.is_empty() => ListParams::default()
            .at(rv)
            .matching(kube::api::VersionMatch::Exact),
        _ => ListParams::default(),
    };
    Ok(World {
        deployments: arcs(deployments.items),
        services: arcs(api::<Service>(client, &ns).list(&lp).await?.items),
        virtual_services: arcs(
            dynamic_api(client, &ns, &virtual_service())
                .list(&lp)
                .await?
                .items,
        ),
        canaries: arcs(api::<Canary>(client, &ns).list(&lp).await?.items),
        // Routes may attach to Gateways in any namespace.
        gateways: arcs(
            Api::<DynamicObject>::all_with(client.clone(), &gateway())
                .list(&lp)
                .await?
                .items,
        ),
        http_routes: arcs(
            dynamic_api(client, &ns, &http_route())
                .list(&lp)
                .await?
                .items,
        ),
    })
}

/// The six kinds, each kept by a watch. The world they give is `None` until every
/// watch has listed once (a kind whose CRD is missing never has: the caller then lists).
pub struct Watched {
    deployments: Store<Deployment>,
    services: Store<Service>,
    virtual_services: Store<DynamicObject>,
    http_routes: Store<DynamicObject>,
    gateways: Store<DynamicObject>,
    canaries: Store<Canary>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn watch<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "watch failed; retrying");
            }
        }
    }));
    store
}

use reflector::reflector;

impl Watched {
    pub fn start(client: &Client, namespace: Option<&str>) -> Watched {
        let (mut tasks, ns) = (Vec::new(), owned(namespace));
        let (vs, route, gw) = (virtual_service(), http_route(), gateway());
        Watched {
            deployments: watch(api(client, &ns), (), &mut tasks),
            services: watch(api(client, &ns), (), &mut tasks),
            virtual_services: watch(dynamic_api(client, &ns, &vs), vs, &mut tasks),
            http_routes: watch(dynamic_api(client, &ns, &route), route, &mut tasks),
            gateways: watch(Api::all_with(client.clone(), &gw), gw, &mut tasks),
            canaries: watch(api(client, &ns), (), &mut tasks),
            tasks,
        }
    }

    /// The world as the watches have it, once every one of them has listed.
    pub fn world(&self) -> Option<World> {
        let all = ready(&self.deployments)
            && ready(&self.services)
            && ready(&self.virtual_services)
            && ready(&self.http_routes)
            && ready(&self.gateways)
            && ready(&self.canaries);
        all.then(|| World {
            deployments: self.deployments.state(),
            services: self.services.state(),
            virtual_services: self.virtual_services.state(),
            http_routes: self.http_routes.state(),
            gateways: self.gateways.state(),
            canaries: self.canaries.state(),
        })
    }
}

/// Writes the HTTPRoute statuses `routing` found out of date.
pub async fn write_statuses(client: &Client, statuses: &[StatusUpdate]) -> kube::Result<()> {
    let resource = http_route();
    for update in statuses {
        Api::<DynamicObject>::namespaced_with(client.clone(), &update.namespace, &resource)
            .patch_status(
                &update.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": update.status})),
            )
            .await?;
    }
    Ok(())
}

/// This second's routes: from the watches, or from a consistent list when the watches
/// are not ready yet or their routes would reach a backend without ready pods.
pub async fn routes(
    client: &Client,
    namespace: Option<&str>,
    watched: &Watched,
) -> kube::Result<Routing> {
    if let Some(world) = watched.world() {
        let routing = routing(&world);
        if !routing.reaches_unready() {
            return Ok(routing);
        }
    }
    Ok(routing(&listed(client, namespace).await?))
}
