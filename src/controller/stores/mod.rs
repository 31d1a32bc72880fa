//! Caches of what serin reads on every reconcile, kept by the watches serin runs
//! anyway: targets and primaries, the Services it owns, its routes and the metadata of
//! the configs targets use. A reconcile reads these instead of asking the API server,
//! and compares what it would write with them, so that an idle Canary costs no request.
//!
//! Only what serin needs is kept: Deployments and autoscalers without their managed
//! fields; Services, VirtualServices, DestinationRules, ConfigMaps and Secrets as
//! metadata only (a config's content is read when its resourceVersion changes);
//! HTTPRoutes whole (their status says whether the route is accepted).
//!
//! Every cache is only an optimisation: a cache that has not synced yet is bypassed
//! (the object is read from the API server), and a write is skipped only when the
//! cached object carries the hash of exactly what would be written (see [`Applied`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Secret, Service},
};
use kube::{
    Api, Client, Resource,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind, PartialObjectMeta},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde_json::Value;

use super::Result;
use crate::api::MetricTemplate;
use crate::router::FIELD_MANAGER;

mod applied;
mod scaled;
mod trim;

use applied::Applied;
pub use applied::{APPLIED_ANNOTATION, stamp};
use scaled::Scaled;
pub use trim::trim;
use trim::{trim_deployment, trim_meta};

/// The routes serin writes and caches: (apiVersion, kind, whole object).
const ROUTES: [(&str, &str, bool); 3] = [
    ("networking.istio.io/v1", "VirtualService", false),
    ("networking.istio.io/v1", "DestinationRule", false),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", true),
];

/// The caches, shared by every reconcile.
pub struct Stores {
    pub deployments: Store<Deployment>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub configmaps: Store<PartialObjectMeta<ConfigMap>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// Targets' autoscalers and their primary copies.
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    /// The MetricTemplates metrics refer to: read on every analysis tick.
    templates: Store<MetricTemplate>,
    /// The namespace the watches cover; `None`: all of them.
    namespace: Option<String>,
    /// Keyed by `apiVersion/kind`.
    routes: HashMap<String, RouteStore>,
    /// The content of configs, with the resourceVersion it was read at.
    contents: Mutex<HashMap<String, (String, Value)>>,
    scaled: Scaled,
    applied: Applied,
}

enum RouteStore {
    Meta(Store<PartialObjectMeta<DynamicObject>>, ApiResource),
    Whole(Store<DynamicObject>, ApiResource),
}

/// The watches that keep [`Stores`]: the ones that wake Canaries are handed to the
/// controller; the routes' run on their own task.
pub struct Watches<D, S, C, X> {
    pub deployments: D,
    pub services: S,
    pub configmaps: C,
    pub secrets: X,
}

/// Whether `store` has been filled by its watch's first list.
pub(crate) fn ready<K: kube::runtime::reflector::Lookup + Clone + 'static>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|r| r.is_ok())
}

type Watched<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    super::api(client, namespace)
}

impl Stores {
    /// The caches and the watches that fill them (`namespace`: only that one). Route
    /// watches run on a task of their own; a route kind whose CRD is not installed is
    /// retried with backoff and never cached.
    #[allow(clippy::type_complexity)]
    pub fn new(
        client: &Client,
        namespace: &Option<String>,
    ) -> (
        Arc<Stores>,
        Watches<
            Watched<Deployment>,
            Watched<PartialObjectMeta<Service>>,
            Watched<PartialObjectMeta<ConfigMap>>,
            Watched<PartialObjectMeta<Secret>>,
        >,
    ) {
        let config = watcher::Config::default().any_semantic();
        let (deployments, d_writer) = reflector::store();
        let (services, s_writer) = reflector::store();
        let (configmaps, c_writer) = reflector::store();
        let (secrets, x_writer) = reflector::store();
        let watches = Watches {
            deployments: reflector::reflector(
                d_writer,
                watcher(api::<Deployment>(client, namespace), config.clone())
                    .default_backoff()
                    .modify(trim_deployment),
            )
            .touched_objects()
            .boxed(),
            services: reflector::reflector(
                s_writer,
                watcher(
                    api::<PartialObjectMeta<Service>>(client, namespace),
                    config.clone(),
                )
                .default_backoff()
                .modify(trim_meta),
            )
            .touched_objects()
            .boxed(),
            configmaps: reflector::reflector(
                c_writer,
                watcher(
                    api::<PartialObjectMeta<ConfigMap>>(client, namespace),
                    config.clone(),
                )
                .default_backoff()
                .modify(trim_meta),
            )
            .touched_objects()
            .boxed(),
            secrets: reflector::reflector(
                x_writer,
                watcher(
                    api::<PartialObjectMeta<Secret>>(client, namespace),
                    config.clone(),
                )
                .default_backoff()
                .modify(trim_meta),
            )
            .touched_objects()
            .boxed(),
        };
        let (autoscalers, a_writer) = reflector::store();
        tokio::spawn(drain(
            "horizontalpodautoscalers".to_string(),
            reflector::reflector(
                a_writer,
                watcher(
                    api::<HorizontalPodAutoscaler>(client, namespace),
                    config.clone(),
                )
                .default_backoff()
                .modify(trim),
            ),
        ));
        let (templates, t_writer) = reflector::store();
        tokio::spawn(drain(
            "metrictemplates".to_string(),
            reflector::reflector(
                t_writer,
                watcher(api::<MetricTemplate>(client, namespace), config.clone())
                    .default_backoff()
                    .modify(trim),
            ),
        ));
        let mut routes = HashMap::new();
        for (api_version, kind, whole) in ROUTES {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
            let store = if whole {
                let api = dynamic_api::<DynamicObject>(client, namespace, &resource);
                RouteStore::Whole(cache(kind, api, &resource, &config, trim), resource)
            } else {
                let api =
                    dynamic_api::<PartialObjectMeta<DynamicObject>>(client, namespace, &resource);
                RouteStore::Meta(cache(kind, api, &resource, &config, trim_meta), resource)
            };
            routes.insert(format!("{api_version}/{kind}"), store);
        }
        let stores = Stores {
            deployments,
            services,
            configmaps,
            secrets,
            autoscalers,
            templates,
            namespace: namespace.clone(),
            routes,
            contents: Mutex::default(),
            scaled: Scaled::default(),
            applied: Applied::default(),
        };
        (Arc::new(stores), watches)
    }

    /// A Deployment, from the cache once it has synced.
    pub async fn deployment(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<Deployment>> {
        cached_or_read(&self.deployments, client, ns, name).await
    }

    /// A HorizontalPodAutoscaler, from the cache once it has synced.
    pub async fn autoscaler(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<HorizontalPodAutoscaler>> {
        cached_or_read(&self.autoscalers, client, ns, name).await
    }

    /// Records that `target`, as cached, was scaled to `replicas`.
    pub fn record_scale(&self, target: &Deployment, replicas: i32) {
        self.scaled.record(target, replicas);
    }

    /// The replicas serin wrote to `target` that the cache does not show yet (see
    /// [`Scaled`]).
    pub fn scaled_since(&self, target: &Deployment) -> Option<i32> {
        self.scaled.since(target)
    }

    /// A MetricTemplate, from the cache once it has synced (and covers `ns`).
    pub async fn template(
        &self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<MetricTemplate>> {
        if !self.covers(ns) {
            return Api::<MetricTemplate>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await
                .map_err(super::Error::Read);
        }
        cached_or_read(&self.templates, client, ns, name).await
    }

    /// Whether the watches see `ns` (a controller limited to one namespace may still
    /// be pointed at a MetricTemplate, or its Secret, in another).
    fn covers(&self, ns: &str) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|watched| watched == ns)
    }

    /// A ConfigMap or Secret: its content is read from the API server only when the
    /// cached metadata shows a resourceVersion not read before.
    pub async fn config<K>(&self, client: &Client, ns: &str, name: &str) -> Result<Option<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let kind = K::kind(&());
        let meta = match kind.as_ref() {
            _ if !self.covers(ns) => None,
            "ConfigMap" if ready(&self.configmaps) => Some(
                self.configmaps
                    .get(&ObjectRef::new(name).within(ns))
                    .map(|m| m.metadata.clone()),
            ),
            "Secret" if ready(&self.secrets) => Some(
                self.secrets
                    .get(&ObjectRef::new(name).within(ns))
                    .map(|m| m.metadata.clone()),
            ),
            _ => None,
        };
        let key = format!("{kind}/{ns}/{name}");
        match &meta {
            Some(None) => {
                self.contents.lock().expect("lock").remove(&key);
                return Ok(None);
            }
            Some(Some(m)) => {
                let cached = self.contents.lock().expect("lock").get(&key).cloned();
                if let Some((rv, value)) = cached
                    && m.resource_version.as_deref() == Some(rv.as_str())
                    && let Ok(object) = serde_json::from_value::<K>(value)
                {
                    return Ok(Some(object));
                }
            }
            None => {}
        }
        let read = Api::<K>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(super::Error::Read)?;
        if let Some(object) = &read
            && let Some(rv) = object.meta().resource_version.clone()
        {
            let mut trimmed = object.clone();
            trim(&mut trimmed);
            let Ok(value) = serde_json::to_value(trimmed) else {
                return Ok(read);
            };
            self.contents.lock().expect("lock").insert(key, (rv, value));
        }
        Ok(read)
    }

    /// A route, whole, from the cache once it has synced (HTTPRoutes only).
    pub async fn route(
        &self,
        client: &Client,
        ns: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>> {
        if let Some(RouteStore::Whole(store, resource)) =
            self.routes.get(&format!("{api_version}/{kind}"))
        {
            if ready(store) {
                let found = store.get(&ObjectRef::new_with(name, resource.clone()).within(ns));
                return Ok(found.map(Arc::unwrap_or_clone));
            }
            return Api::<DynamicObject>::namespaced_with(client.clone(), ns, resource)
                .get_opt(name)
                .await
                .map_err(super::Error::Read);
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
            .get_opt(name)
            .await
            .map_err(super::Error::Read)
    }

    /// The cached annotations and resourceVersion of an object serin writes, `None`
    /// when it is not cached (absent, or the cache has not synced).
    fn live(
        &self,
        ns: &str,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> Option<kube::api::ObjectMeta> {
        if api_version == "v1" && kind == "Service" {
            if !ready(&self.services) {
                return None;
            }
            return self
                .services
                .get(&ObjectRef::new(name).within(ns))
                .map(|s| s.metadata.clone());
        }
        if api_version == "autoscaling/v2" && kind == "HorizontalPodAutoscaler" {
            if !ready(&self.autoscalers) {
                return None;
            }
            return self
                .autoscalers
                .get(&ObjectRef::new(name).within(ns))
                .map(|s| s.metadata.clone());
        }
        match self.routes.get(&format!("{api_version}/{kind}"))? {
            RouteStore::Meta(store, resource) => {
                if !ready(store) {
                    return None;
                }
                store
                    .get(&ObjectRef::new_with(name, resource.clone()).within(ns))
                    .map(|o| o.metadata.clone())
            }
            RouteStore::Whole(store, resource) => {
                if !ready(store) {
                    return None;
                }
                store
                    .get(&ObjectRef::new_with(name, resource.clone()).within(ns))
                    .map(|o| o.metadata.clone())
            }
        }
    }

    /// Server-side applies `objects` into `ns`, in order, skipping each one whose
    /// cached copy already carries exactly what would be written.
    pub async fn apply(&self, client: &Client, ns: &str, objects: &[Value]) -> Result<usize> {
        let mut written = 0;
        for object in objects {
            let (resource, kind, name) = crate::router::resource_of(object)
                .ok_or_else(|| crate::router::Error::Invalid(object.to_string()))?;
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let (stamped, hash) = stamp(object);
            let key = format!("{api_version}/{kind}/{ns}/{name}");
            let live = self.live(ns, api_version, &kind, &name);
            if self.applied.unchanged(&key, &hash, live.as_ref()) {
                continue;
            }
            self.applied.begin(&key);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
            let result = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&stamped),
                )
                .await
                .map_err(|source| crate::router::Error::Apply {
                    kind: kind.clone(),
                    name: name.clone(),
                    source,
                })?;
            self.applied
                .done(&key, hash, result.metadata.resource_version.clone());
            written += 1;
        }
        Ok(written)
    }
}

/// `name` in `ns` from `store` once it has synced, else from the API server.
async fn cached_or_read<K>(
    store: &Store<K>,
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + 'static,
{
    if ready(store) {
        let found = store.get(&ObjectRef::new(name).within(ns));
        return Ok(found.map(Arc::unwrap_or_clone));
    }
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(super::Error::Read)
}

/// The API of the kind `resource` describes, in `namespace` or in all of them.
pub(crate) fn dynamic_api<K>(
    client: &Client,
    namespace: &Option<String>,
    resource: &ApiResource,
) -> Api<K>
where
    K: Resource<Scope = kube::core::DynamicResourceScope, DynamicType = ApiResource>,
{
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// A cache of the route kind `kind`, kept by its own watch (drained in the background)
/// and trimmed by `modify`.
fn cache<K>(
    kind: &str,
    api: Api<K>,
    resource: &ApiResource,
    config: &watcher::Config,
    modify: fn(&mut K),
) -> Store<K>
where
    K: Resource<DynamicType = ApiResource>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let writer = Writer::new(resource.clone());
    let store = writer.as_reader();
    tokio::spawn(drain(
        kind.to_string(),
        reflector::reflector(
            writer,
            watcher(api, config.clone())
                .default_backoff()
                .modify(modify),
        ),
    ));
    store
}

/// Polls a watch that only keeps a cache. Its first failure is a warning (a missing
/// permission or CRD: the objects are then read or written without the cache), the
/// next ones are retried quietly.
async fn drain<S, T>(what: String, stream: S)
where
    S: Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut warned = false;
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            let error = super::chain(&e);
            if warned {
                tracing::debug!(watch = %what, error = %error, "watching failed");
            } else {
                tracing::warn!(watch = %what, error = %error, "watching failed; reading and writing without this cache");
                warned = true;
            }
        }
    }
}
