//! Delivery: resolves an alert to its AlertProvider and webhook address, posts the
//! payload with bounded retries, and removes the notification from the Canary's status.
//!
//! One task per Canary drains its `pendingNotifications` in order, off the reconcile's
//! path. An entry leaves the status only after its receiver answered 2xx or the retries
//! ran out, so a controller killed before that resends it on restart. The address is
//! never logged, recorded or put in an error: errors say which alert and provider failed
//! and how (status code, timeout), nothing more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tracing::{debug, info, warn};

use super::{DEFAULT_TARGET, Message, delivered, notifier};
use crate::api::alert_provider::secret_keys;
use crate::api::{AlertProvider, AlertProviderType, AlertSeverity, Canary, PendingNotification};

#[derive(Debug, Error)]
pub enum Error {
    #[error("alert {0} is no longer in the Canary")]
    UnknownAlert(String),
    #[error("AlertProvider {0} not found")]
    ProviderNotFound(String),
    #[error("Secret {0} of AlertProvider {1} not found or has no key address")]
    SecretMissing(String, String),
    #[error("AlertProvider {0} has no address")]
    NoAddress(String),
    #[error("reading AlertProvider {0}")]
    Read(String, #[source] kube::Error),
    #[error("the proxy of AlertProvider {0} is not a valid URL")]
    Proxy(String),
    #[error("the receiver answered {0}")]
    Status(u16),
    /// The transport error with its URL removed.
    #[error("sending failed ({0})")]
    Transport(String),
}

impl Error {
    fn retryable(&self) -> bool {
        match self {
            Error::Status(code) => *code >= 500 || *code == 429 || *code == 408,
            Error::Transport(_) => true,
            _ => false,
        }
    }
}

/// The provider of `serin run --alert-provider`, which gets every Canary's messages.
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultProvider {
    pub namespace: String,
    pub name: String,
    pub severity: AlertSeverity,
}

impl DefaultProvider {
    /// Parses `namespace/name`.
    pub fn parse(reference: &str, severity: AlertSeverity) -> Option<Self> {
        let (namespace, name) = reference.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty()).then(|| Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            severity,
        })
    }
}

/// How hard delivery tries.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub backoff: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Settings of notifications on `serin run`.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub default: Option<DefaultProvider>,
    pub retry: Retry,
    pub metrics: NotifyMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    /// slack, msteams, discord, generic, or unknown when the provider was not found.
    provider_type: String,
    /// sent, retried, failed.
    result: String,
}

/// `serin_notifications_total{provider_type, result}`.
#[derive(Clone, Debug, Default)]
pub struct NotifyMetrics {
    outcomes: Family<Labels, Counter>,
}

impl NotifyMetrics {
    /// Creates the series and registers them in `registry` (give it the `serin` prefix).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "notifications",
            "Notification attempts by provider type and result (sent, retried, failed)",
            metrics.outcomes.clone(),
        );
        metrics
    }

    fn inc(&self, provider_type: &str, result: &str) {
        self.outcomes
            .get_or_create(&Labels {
                provider_type: provider_type.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The count for one label pair (tests).
    pub fn count(&self, provider_type: &str, result: &str) -> u64 {
        self.outcomes
            .get_or_create(&Labels {
                provider_type: provider_type.to_string(),
                result: result.to_string(),
            })
            .get()
    }
}

fn type_label(t: AlertProviderType) -> &'static str {
    match t {
        AlertProviderType::Slack => "slack",
        AlertProviderType::Msteams => "msteams",
        AlertProviderType::Discord => "discord",
        AlertProviderType::Generic => "generic",
    }
}

/// A resolved destination. Its address is only ever handed to the HTTP client.
struct Destination {
    provider: AlertProvider,
    address: String,
    token: Option<String>,
}

pub struct Dispatcher {
    client: Client,
    settings: Settings,
    /// Canaries with a draining task, and whether more was offered since it last read.
    active: Mutex<HashMap<(String, String), bool>>,
    /// Where its status writes are recorded, so that reconciles skip the versions they replace.
    superseded: Arc<crate::controller::superseded::Superseded>,
}

impl Dispatcher {
    pub fn new(
        client: Client,
        settings: Settings,
        superseded: Arc<crate::controller::superseded::Superseded>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            settings,
            active: Mutex::default(),
            superseded,
        })
    }

    /// The severity the default provider wants, if there is one.
    pub fn default_severity(&self) -> Option<AlertSeverity> {
        self.settings.default.as_ref().map(|d| d.severity)
    }

    /// Makes sure the Canary's pending notifications are being delivered. Cheap: called
    /// after every reconcile that leaves some pending.
    pub fn offer(self: &Arc<Self>, canary: &Canary) {
        let key = (canary.namespace().unwrap_or_default(), canary.name_any());
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dirty) = active.get_mut(&key) {
            *dirty = true;
            return;
        }
        active.insert(key.clone(), false);
        drop(active);
        let this = self.clone();
        tokio::spawn(async move { this.drain(key.0, key.1).await });
    }

    async fn drain(self: Arc<Self>, ns: String, name: String) {
        let api: Api<Canary> = Api::namespaced(self.client.clone(), &ns);
        let key = (ns.clone(), name.clone());
        loop {
            let canary = match api.get_opt(&name).await {
                Ok(Some(c)) => Some(c),
                Ok(None) => None,
                Err(e) => {
                    debug!(canary = %name, error = %e, "reading the Canary for its notifications");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let next = canary.as_ref().and_then(|c| {
                let p = c.status.as_ref()?.pending_notifications.first()?.clone();
                let target = p.targets.first()?.clone();
                Some((c.clone(), p, target))
            });
            let Some((canary, pending, target)) = next else {
                let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
                if active.get(&key).copied().unwrap_or(false) {
                    active.insert(key.clone(), false);
                    continue;
                }
                active.remove(&key);
                return;
            };
            self.deliver(&canary, &pending, &target).await;
            self.mark_delivered(&api, &name, &pending.key, &target)
                .await;
        }
    }

    /// Sends one notification to one alert, retrying 5xx, 429 and transport errors
    /// with doubling waits. Failures are counted and logged, without the address.
    async fn deliver(&self, canary: &Canary, pending: &PendingNotification, target: &str) {
        let name = canary.name_any();
        let ns = canary.namespace().unwrap_or_default();
        let destination = match self.resolve(canary, target).await {
            Ok(d) => d,
            Err(e) => {
                self.settings.metrics.inc("unknown", "failed");
                // The whole chain (a Forbidden names the resource); these errors carry no
                // webhook address.
                warn!(canary = %name, namespace = %ns, alert = %target, reason = %pending.reason, error = %crate::controller::chain(&e), "notification not delivered");
                return;
            }
        };
        let provider_type = type_label(destination.provider.spec.type_);
        let message = Message::from_pending(&name, &ns, pending);
        let body = notifier(&destination.provider.spec, &destination.address).payload(&message);
        let http = match http_client(&destination, &self.settings.retry) {
            Ok(h) => h,
            Err(e) => {
                self.settings.metrics.inc(provider_type, "failed");
                warn!(canary = %name, namespace = %ns, alert = %target, error = %e, "notification not delivered");
                return;
            }
        };
        let retry = &self.settings.retry;
        let mut wait = retry.backoff;
        for attempt in 1..=retry.attempts.max(1) {
            match post(&http, &destination, &body).await {
                Ok(()) => {
                    self.settings.metrics.inc(provider_type, "sent");
                    info!(canary = %name, namespace = %ns, alert = %target, provider = %destination.provider.name_any(), reason = %pending.reason, attempt, "notification sent");
                    return;
                }
                Err(e) if e.retryable() && attempt < retry.attempts => {
                    self.settings.metrics.inc(provider_type, "retried");
                    info!(canary = %name, namespace = %ns, alert = %target, error = %e, attempt, "notification failed, retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    self.settings.metrics.inc(provider_type, "failed");
                    warn!(canary = %name, namespace = %ns, alert = %target, provider = %destination.provider.name_any(), reason = %pending.reason, error = %e, attempt, "notification not delivered");
                    return;
                }
            }
        }
    }

    async fn resolve(&self, canary: &Canary, target: &str) -> Result<Destination, Error> {
        let canary_ns = canary.namespace().unwrap_or_default();
        let (ns, name) = if target == DEFAULT_TARGET {
            let d = self
                .settings
                .default
                .as_ref()
                .ok_or_else(|| Error::UnknownAlert(target.to_string()))?;
            (d.namespace.clone(), d.name.clone())
        } else {
            let alert = canary
                .spec
                .analysis
                .alerts
                .iter()
                .find(|a| a.name == target)
                .ok_or_else(|| Error::UnknownAlert(target.to_string()))?;
            (
                alert
                    .provider_ref
                    .namespace
                    .clone()
                    .unwrap_or(canary_ns.clone()),
                alert.provider_ref.name.clone(),
            )
        };
        let providers: Api<AlertProvider> = Api::namespaced(self.client.clone(), &ns);
        let provider = providers
            .get_opt(&name)
            .await
            .map_err(|e| Error::Read(name.clone(), e))?
            .ok_or_else(|| Error::ProviderNotFound(format!("{ns}/{name}")))?;
        let (address, token) = match &provider.spec.secret_ref {
            Some(secret_ref) => {
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let missing = || Error::SecretMissing(secret_ref.name.clone(), name.clone());
                let secret = secrets
                    .get_opt(&secret_ref.name)
                    .await
                    .map_err(|e| Error::Read(name.clone(), e))?
                    .ok_or_else(missing)?;
                let data = secret.data.unwrap_or_default();
                let text = |k: &str| {
                    data.get(k)
                        .and_then(|v| String::from_utf8(v.0.clone()).ok())
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                };
                (
                    text(secret_keys::ADDRESS).ok_or_else(missing)?,
                    text(secret_keys::TOKEN),
                )
            }
            None => (
                provider
                    .spec
                    .address
                    .clone()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| Error::NoAddress(name.clone()))?,
                None,
            ),
        };
        Ok(Destination {
            provider,
            address,
            token,
        })
    }

    /// Removes `target` from notification `key` in the Canary's status, conditioned on
    /// the version read, as every status write is.
    async fn mark_delivered(&self, api: &Api<Canary>, name: &str, key: &str, target: &str) {
        for _ in 0..20 {
            let canary = match api.get_opt(name).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    debug!(canary = %name, error = %e, "reading the Canary");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut status = canary.status.clone().unwrap_or_default();
            if !delivered(&mut status, key, target) {
                return;
            }
            match crate::controller::act::write_status(&self.client, &canary, &status).await {
                Ok(()) => {
                    self.superseded.record(&canary);
                    return;
                }
                Err(crate::controller::Error::Conflict) => {}
                Err(e) => {
                    debug!(canary = %name, error = %crate::controller::chain(&e), "recording a delivered notification");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        warn!(canary = %name, alert = %target, "could not record a delivered notification; it may be sent again");
    }
}

fn http_client(d: &Destination, retry: &Retry) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(retry.timeout)
        .connect_timeout(retry.timeout);
    if let Some(proxy) = d.provider.spec.proxy.as_deref().filter(|p| !p.is_empty()) {
        let proxy = reqwest::Proxy::all(proxy).map_err(|_| Error::Proxy(d.provider.name_any()))?;
        builder = builder.proxy(proxy);
    }
    builder
        .build()
        .map_err(|_| Error::Transport("building the HTTP client".to_string()))
}

async fn post(
    http: &reqwest::Client,
    d: &Destination,
    body: &serde_json::Value,
) -> Result<(), Error> {
    let mut request = http.post(&d.address).json(body);
    if let Some(token) = &d.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(Error::Status(status.as_u16()))
    }
}

/// A transport error as text, without the URL reqwest puts in its message.
fn transport(e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_builder() {
        "invalid address"
    } else {
        "request failed"
    };
    Error::Transport(kind.to_string())
}
