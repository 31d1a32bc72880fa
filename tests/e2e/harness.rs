//! Shared helpers for the end-to-end tests: connecting to the local control plane
//! started by `tests/e2e/cluster.sh`, one namespace per test, and waiting for what a
//! user would see with a timeout that reports what was last seen.

use std::{
    fmt::Debug,
    future::Future,
    panic::AssertUnwindSafe,
    path::PathBuf,
    time::{Duration, Instant},
};

use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use serde::de::DeserializeOwned;

/// Label put on every namespace a test creates, so leftovers can be found and deleted.
pub const E2E_LABEL: &str = "serin.dev/e2e";

/// What `cluster.sh up` exported: where the cluster and Prometheus are.
#[derive(Clone, Debug)]
pub struct Env {
    pub prometheus_url: String,
    pub prometheus_targets: PathBuf,
    /// The cluster's directory; child processes log to `logs/` in it.
    pub dir: PathBuf,
}

impl Env {
    pub fn get() -> Env {
        install_crypto_provider();
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: the end-to-end tests need the local control plane. \
                     Run `make test`, or `. $(tests/e2e/cluster.sh up)` before `cargo test --test e2e`."
                )
            })
        };
        var("KUBECONFIG");
        Env {
            prometheus_url: var("SERIN_PROMETHEUS_URL"),
            prometheus_targets: var("SERIN_PROMETHEUS_TARGETS").into(),
            dir: var("SERIN_E2E_DIR").into(),
        }
    }
}

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn client() -> Client {
    install_crypto_provider();
    Env::get();
    Client::try_default()
        .await
        .expect("connecting to the local control plane with KUBECONFIG")
}

/// Runs `test` in a fresh namespace labelled for cleanup, and deletes the namespace
/// afterwards whether the test passed or panicked.
pub async fn with_namespace<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([(E2E_LABEL.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the test namespace");
    let outcome = AssertUnwindSafe(test(client, name.clone()))
        .catch_unwind()
        .await;
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Polls `probe` until it returns `Ok(value)`, or panics after `timeout` with the
/// description and the last thing the probe saw (its `Err` text).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let last_seen = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last_seen}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the named object exists and `check` accepts it; `check` returns why
/// not, which is reported if the wait times out.
pub async fn await_object<K, F>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    check: F,
) -> K
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    F: Fn(&K) -> Result<(), String>,
{
    eventually(what, timeout, || async {
        match api.get_opt(name).await {
            Ok(Some(obj)) => check(&obj)
                .map(|_| obj.clone())
                .map_err(|why| format!("{} {}: {why}", K::kind(&()), obj.name_any())),
            Ok(None) => Err(format!("{name} does not exist")),
            Err(e) => Err(format!("error reading {name}: {e}")),
        }
    })
    .await
}

/// A Prometheus instant query; returns the result vector as JSON.
pub async fn prometheus_query(env: &Env, query: &str) -> Result<Vec<serde_json::Value>, String> {
    let url = format!("{}/api/v1/query", env.prometheus_url);
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .query(&[("query", query)])
        .send()
        .await
        .map_err(|e| format!("Prometheus unreachable: {e}"))?
        .json()
        .await
        .map_err(|e| format!("Prometheus answered something that is not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("Prometheus query failed: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}
