//! Notifications: tells people what a rollout did, through the AlertProviders a Canary's
//! `analysis.alerts` name (and a default provider set on `serin run`).
//!
//! A notification is decided with its transition: [`enqueue`] (pure) adds it to
//! `status.pendingNotifications` in the same status write, and the [`Dispatcher`] delivers
//! it off the reconcile's path and removes it from the status. A controller killed between
//! the decision and the send finds it there on restart; one removed is never sent again.

pub mod deliver;
pub mod discord;
pub mod generic;
pub mod msteams;
pub mod slack;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::api::canary::annotations;
use crate::api::{
    AlertProviderSpec, AlertProviderType, AlertSeverity, Canary, CanaryPhase, CanaryStatus,
    PendingNotification,
};
use crate::rollout::conditions::reasons;
use crate::rollout::plan::{Event, Severity};

pub use deliver::{DefaultProvider, Dispatcher, NotifyMetrics, Settings};

/// The target name of the default provider (`serin run --alert-provider`) in
/// `pendingNotifications`.
pub const DEFAULT_TARGET: &str = "(default)";

/// At most this many notifications wait in a Canary's status; the oldest go first.
pub const MAX_PENDING: usize = 32;

/// What a notification says, whatever the format.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The Canary's name and namespace.
    pub name: String,
    pub namespace: String,
    /// Event reason: NewRevision, WaitingApproval, Advanced, CheckFailed, Succeeded,
    /// RolledBack, ...
    pub reason: String,
    pub severity: AlertSeverity,
    pub phase: CanaryPhase,
    pub revision: Option<String>,
    pub image: Option<String>,
    pub weight: i32,
    /// The metric, webhook, Job or gate that decided, its value and accepted range.
    pub metric: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<String>,
    pub text: String,
    /// The event's idempotency key.
    pub key: String,
    pub time: Timestamp,
}

impl Message {
    pub fn from_pending(name: &str, namespace: &str, p: &PendingNotification) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            reason: p.reason.clone(),
            severity: p.severity,
            phase: p.phase,
            revision: p.revision.clone(),
            image: p.image.clone(),
            weight: p.weight,
            metric: p.metric.clone(),
            value: p.value,
            threshold: p.threshold.clone(),
            text: p.message.clone(),
            key: p.key.clone(),
            time: p.time.as_ref().map_or_else(Timestamp::now, |t| t.0),
        }
    }

    /// `<name>.<namespace>`, the title every format uses (as Flagger's).
    pub fn title(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// The outcome, for colours: good news, something to look at, or a failure.
    pub fn tone(&self) -> Tone {
        match self.severity {
            AlertSeverity::Error => Tone::Bad,
            AlertSeverity::Warn => Tone::Warning,
            AlertSeverity::Info if self.reason == reasons::WAITING_APPROVAL => Tone::Warning,
            AlertSeverity::Info => Tone::Good,
        }
    }

    /// The check that decided, with its value and threshold: "request-success-rate =
    /// 80.5 (threshold >= 99)".
    pub fn check(&self) -> Option<String> {
        let metric = self.metric.as_deref()?;
        let mut text = metric.to_string();
        if let Some(v) = self.value {
            text.push_str(&format!(" = {}", round(v)));
        }
        if let Some(t) = &self.threshold {
            text.push_str(&format!(" (threshold {t})"));
        }
        Some(text)
    }

    /// For a gate that waits, the command that opens it.
    pub fn command(&self) -> Option<String> {
        if self.reason != reasons::WAITING_APPROVAL {
            return None;
        }
        let revision = self.revision.as_deref().unwrap_or_default();
        let (annotation, value) = match self.phase {
            CanaryPhase::Waiting => (annotations::APPROVE_START, revision.to_string()),
            CanaryPhase::WaitingPromotion => (annotations::APPROVE_PROMOTION, revision.to_string()),
            // A traffic increase waits while the analysis progresses; one approval lets
            // one step through.
            CanaryPhase::Progressing => (
                annotations::APPROVE_TRAFFIC_INCREASE,
                format!("{revision}@{}", self.weight),
            ),
            _ => return None,
        };
        Some(format!(
            "kubectl annotate canary/{} -n {} --overwrite {annotation}={value}",
            self.name, self.namespace
        ))
    }

    /// The facts every format lists, in order, skipping what is unknown.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::new();
        if let Some(r) = &self.revision {
            fields.push(("Revision", r.clone()));
        }
        if let Some(i) = &self.image {
            fields.push(("Image", i.clone()));
        }
        fields.push(("Weight", format!("{}%", self.weight)));
        if let Some(c) = self.check() {
            fields.push(("Check", c));
        }
        fields.push(("Reason", self.reason.clone()));
        if let Some(c) = self.command() {
            fields.push(("Command", c));
        }
        fields
    }
}

fn round(v: f64) -> String {
    let r = (v * 100.0).round() / 100.0;
    format!("{r}")
}

/// The colour family of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Good,
    Warning,
    Bad,
}

/// One message format: builds the JSON body a service accepts.
pub trait Notifier: Send + Sync {
    /// The request body.
    fn payload(&self, message: &Message) -> Value;
}

/// The options of an AlertProvider a format may use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    pub channel: Option<String>,
    pub username: Option<String>,
}

/// The format for a provider. Microsoft Teams gets the legacy MessageCard that Flagger
/// sends when the address is an Office 365 connector (`*.webhook.office.com`), and an
/// Adaptive Card, as Workflows webhooks require, otherwise.
pub fn notifier(spec: &AlertProviderSpec, address: &str) -> Box<dyn Notifier> {
    let options = Options {
        channel: spec.channel.clone(),
        username: spec.username.clone(),
    };
    match spec.type_ {
        AlertProviderType::Slack => Box::new(slack::Slack(options)),
        AlertProviderType::Discord => Box::new(discord::Discord(options)),
        AlertProviderType::Msteams if msteams::is_legacy_connector(address) => {
            Box::new(msteams::MessageCard)
        }
        AlertProviderType::Msteams => Box::new(msteams::AdaptiveCard),
        AlertProviderType::Generic => Box::new(generic::Generic),
    }
}

/// Whether an alert of `threshold` severity wants an event of `severity`, as Flagger
/// filters: info gets everything, warn gets warnings and errors, error only errors.
pub fn accepts(threshold: AlertSeverity, severity: AlertSeverity) -> bool {
    severity >= threshold
}

pub fn alert_severity(severity: Severity) -> AlertSeverity {
    match severity {
        Severity::Info => AlertSeverity::Info,
        Severity::Warn => AlertSeverity::Warn,
        Severity::Error => AlertSeverity::Error,
    }
}

/// Which events are worth a message. Steps (`Advanced`) go only to alerts that ask for
/// them; approvals and promotion progress are in events and status only.
pub fn notifiable(reason: &str) -> bool {
    [
        reasons::INITIALIZED,
        reasons::NEW_REVISION,
        reasons::RESTARTED,
        reasons::SKIPPED_ANALYSIS,
        reasons::WAITING_APPROVAL,
        reasons::ADVANCED,
        reasons::CHECK_FAILED,
        reasons::SUCCEEDED,
        reasons::ROLLED_BACK,
    ]
    .contains(&reason)
}

/// The alerts (by name, and [`DEFAULT_TARGET`]) that want `event`.
pub fn targets(canary: &Canary, event: &Event, default: Option<AlertSeverity>) -> Vec<String> {
    if event.muted || !notifiable(event.reason) {
        return Vec::new();
    }
    let severity = alert_severity(event.severity);
    let step = event.reason == reasons::ADVANCED;
    let mut targets: Vec<String> = canary
        .spec
        .analysis
        .alerts
        .iter()
        .filter(|a| accepts(a.severity(), severity) && (!step || a.steps))
        .map(|a| a.name.clone())
        .collect();
    if let Some(threshold) = default
        && !step
        && accepts(threshold, severity)
    {
        targets.push(DEFAULT_TARGET.to_string());
    }
    targets.dedup();
    targets
}

/// The accepted range of the metric `name`, as people write it: ">= 99", "<= 500",
/// "[1, 5]".
pub fn threshold(canary: &Canary, name: &str) -> Option<String> {
    let metric = canary
        .spec
        .analysis
        .metrics
        .iter()
        .find(|m| m.name == name)?;
    let range = metric.threshold_range.as_ref()?;
    match (range.min, range.max) {
        (Some(min), Some(max)) => Some(format!("[{}, {}]", round(min), round(max))),
        (Some(min), None) => Some(format!(">= {}", round(min))),
        (None, Some(max)) => Some(format!("<= {}", round(max))),
        (None, None) => None,
    }
}

/// Records in `status` the notifications `events` cause: called on the status a plan
/// will write, so a notification exists exactly when its transition was recorded.
pub fn enqueue(
    status: &mut CanaryStatus,
    canary: &Canary,
    events: &[Event],
    image: Option<&str>,
    default: Option<AlertSeverity>,
    now: Timestamp,
) {
    for event in events {
        let targets = targets(canary, event, default);
        if targets.is_empty()
            || status
                .pending_notifications
                .iter()
                .any(|p| p.key == event.key)
        {
            continue;
        }
        status.pending_notifications.push(PendingNotification {
            key: event.key.clone(),
            reason: event.reason.to_string(),
            severity: alert_severity(event.severity),
            phase: status.phase,
            revision: event.revision.clone(),
            image: image.map(str::to_string),
            weight: event.weight,
            metric: event.metric.clone(),
            value: event.value.filter(|v| v.is_finite()),
            threshold: event.metric.as_deref().and_then(|m| threshold(canary, m)),
            message: event.message.clone(),
            time: Some(Time(now)),
            targets,
        });
    }
    let excess = status
        .pending_notifications
        .len()
        .saturating_sub(MAX_PENDING);
    status.pending_notifications.drain(..excess);
}

/// `status` after `target` got (or gave up on) notification `key`.
pub fn delivered(status: &mut CanaryStatus, key: &str, target: &str) -> bool {
    let Some(i) = status
        .pending_notifications
        .iter()
        .position(|p| p.key == key)
    else {
        return false;
    };
    let entry = &mut status.pending_notifications[i];
    let before = entry.targets.len();
    entry.targets.retain(|t| t != target);
    let changed = entry.targets.len() != before;
    if entry.targets.is_empty() {
        status.pending_notifications.remove(i);
        return true;
    }
    changed
}

#[cfg(test)]
mod tests;
