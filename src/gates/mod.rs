//! Gates: what must answer before a rollout moves on. Flagger's webhooks, with their
//! payload and the rules that turn their answers into inputs of the pure plan (the HTTP
//! calls are in `webhooks`), and the conformance-test Jobs (`jobs`). Everything in this
//! file is pure.

pub mod jobs;
pub mod webhooks;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::{Canary, CanaryPhase, CanaryStatus, CanaryWebhook, WebhookType};
use crate::rollout::verdict::Finding;

/// What a webhook answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The HTTP status code and the body of the response.
    Status(u16, String),
    /// No response: connection refused, timeout, bad URL.
    Unreachable(String),
}

impl Answer {
    /// Flagger counts a status code above 202 as a failure (so 203–299 fail too).
    pub fn passed(&self) -> bool {
        matches!(self, Answer::Status(code, _) if *code <= 202)
    }

    /// Whether the call is worth retrying, as go-retryablehttp's default policy decides
    /// (what Flagger's `retries` uses): no response, 429, or a 5xx other than 501.
    pub fn retryable(&self) -> bool {
        match self {
            Answer::Unreachable(_) => true,
            Answer::Status(code, _) => *code == 429 || (*code >= 500 && *code != 501),
        }
    }
}

/// Wait before retry `attempt` (0-based): go-retryablehttp's default backoff, 1s doubling
/// up to 30s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempt).unwrap_or(u64::MAX).min(30))
}

/// One webhook called, with its answer and how long the call (retries included) took.
#[derive(Clone, Debug, PartialEq)]
pub struct Called {
    pub name: String,
    pub kind: WebhookType,
    pub mute_alert: bool,
    pub answer: Answer,
    pub latency: Duration,
}

impl Called {
    /// What the answer means for a check or a gate, as one readable finding.
    pub fn finding(&self) -> Finding {
        let message = match &self.answer {
            Answer::Status(code, body) => {
                let body = body.trim();
                if body.is_empty() {
                    format!("webhook {} answered {code}", self.name)
                } else {
                    format!("webhook {} answered {code}: {}", self.name, clip(body))
                }
            }
            Answer::Unreachable(why) => format!("webhook {} not reached: {why}", self.name),
        };
        Finding::gate(&self.name, message)
    }
}

/// A response body quoted in status and events is kept short.
fn clip(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// A gate (confirm-*) or a check (pre-rollout, rollout): open when every webhook of the
/// kind passed, closed by the first that did not.
pub fn all_passed(calls: &[Called]) -> Result<(), Finding> {
    match calls.iter().find(|c| !c.answer.passed()) {
        Some(failed) => Err(failed.finding()),
        None => Ok(()),
    }
}

/// A `rollback` webhook answering 2xx asks for a rollback now.
pub fn rollback_requested(calls: &[Called]) -> Option<Finding> {
    calls
        .iter()
        .find(|c| c.answer.passed())
        .map(|c| Finding::gate(&c.name, format!("rollback requested by webhook {}", c.name)))
}

/// The webhooks of one kind.
pub fn of_kind(canary: &Canary, kind: WebhookType) -> impl Iterator<Item = &CanaryWebhook> {
    canary
        .spec
        .analysis
        .webhooks
        .iter()
        .filter(move |w| w.webhook_type() == kind)
}

pub fn has(canary: &Canary, kind: WebhookType) -> bool {
    of_kind(canary, kind).next().is_some()
}

/// Flagger's `CanaryWebhookPayload`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: CanaryPhase,
    pub checksum: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// A hash of what is being rolled out (the revision and the tracked configs), so that a
/// gate service can tell two releases apart. Flagger hashes the same two fields.
pub fn checksum(status: Option<&CanaryStatus>) -> String {
    let mut hash = Sha256::new();
    if let Some(status) = status {
        for (key, value) in status.tracked_configs.iter().flatten() {
            hash.update(key.as_bytes());
            hash.update(b"=");
            hash.update(value.as_bytes());
            hash.update(b"\n");
        }
        hash.update(status.last_applied_spec.as_deref().unwrap_or_default());
    }
    hex::encode(&hash.finalize()[..8])
}

/// The payload of a gate, check, rollback or post-rollout webhook: the hook's metadata
/// as given, and the phase the call is about (Progressing for gates and checks; the
/// outcome for post-rollout).
pub fn payload(canary: &Canary, phase: CanaryPhase, hook: &CanaryWebhook) -> Payload {
    Payload {
        name: canary.metadata.name.clone().unwrap_or_default(),
        namespace: canary.metadata.namespace.clone().unwrap_or_default(),
        phase,
        checksum: checksum(canary.status.as_ref()),
        metadata: hook.metadata.clone(),
    }
}

/// The payload of an `event` webhook: `eventMessage`, `eventType` (Normal or Warning)
/// and `timestamp` (Unix milliseconds) in the metadata, the hook's own metadata added
/// without overriding them, as Flagger does.
pub fn event_payload(
    canary: &Canary,
    status: &CanaryStatus,
    hook: &CanaryWebhook,
    message: &str,
    warning: bool,
    unix_millis: i64,
) -> Payload {
    let mut metadata = BTreeMap::from([
        ("eventMessage".to_string(), message.to_string()),
        (
            "eventType".to_string(),
            if warning { "Warning" } else { "Normal" }.to_string(),
        ),
        ("timestamp".to_string(), unix_millis.to_string()),
    ]);
    for (key, value) in &hook.metadata {
        metadata.entry(key.clone()).or_insert_with(|| value.clone());
    }
    Payload {
        name: canary.metadata.name.clone().unwrap_or_default(),
        namespace: canary.metadata.namespace.clone().unwrap_or_default(),
        phase: status.phase,
        checksum: checksum(Some(status)),
        metadata,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn called(name: &str, answer: Answer) -> Called {
        Called {
            name: name.into(),
            kind: WebhookType::Rollout,
            mute_alert: false,
            answer,
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn a_status_above_202_fails_as_in_flagger() {
        assert!(Answer::Status(200, String::new()).passed());
        assert!(Answer::Status(202, String::new()).passed());
        assert!(!Answer::Status(204, String::new()).passed());
        assert!(!Answer::Status(403, String::new()).passed());
        assert!(!Answer::Unreachable("refused".into()).passed());
    }

    #[test]
    fn retries_follow_go_retryablehttp_default_policy() {
        assert!(Answer::Unreachable("timeout".into()).retryable());
        assert!(Answer::Status(500, String::new()).retryable());
        assert!(Answer::Status(503, String::new()).retryable());
        assert!(Answer::Status(429, String::new()).retryable());
        assert!(!Answer::Status(501, String::new()).retryable());
        assert!(!Answer::Status(403, String::new()).retryable());
        assert!(!Answer::Status(200, String::new()).retryable());
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(10), Duration::from_secs(30));
        assert_eq!(backoff(100), Duration::from_secs(30));
    }

    #[test]
    fn a_gate_is_closed_by_the_first_webhook_that_did_not_pass_quoting_its_answer() {
        let calls = vec![
            called("ok", Answer::Status(200, String::new())),
            called("gate", Answer::Status(403, "Forbidden\n".into())),
            called("down", Answer::Unreachable("connection refused".into())),
        ];
        let f = all_passed(&calls).unwrap_err();
        assert_eq!(f.metric.as_deref(), Some("gate"));
        assert_eq!(f.message, "webhook gate answered 403: Forbidden");
        assert_eq!(all_passed(&calls[..1]), Ok(()));
        assert_eq!(all_passed(&[]), Ok(()));
    }

    #[test]
    fn a_rollback_webhook_answering_2xx_asks_for_a_rollback() {
        assert_eq!(
            rollback_requested(&[called("rb", Answer::Status(404, String::new()))]),
            None
        );
        let f = rollback_requested(&[called("rb", Answer::Status(200, String::new()))]).unwrap();
        assert!(
            f.message.contains("rollback requested by webhook rb"),
            "{f}"
        );
    }

    #[test]
    fn the_payload_has_flaggers_field_names() {
        let mut canary = Canary::test();
        canary.status = Some(CanaryStatus {
            last_applied_spec: Some("abc".into()),
            ..Default::default()
        });
        let hook = CanaryWebhook {
            name: "load".into(),
            url: "http://t/".into(),
            metadata: BTreeMap::from([("cmd".to_string(), "hey".to_string())]),
            ..Default::default()
        };
        let json = serde_json::to_value(payload(&canary, CanaryPhase::Progressing, &hook)).unwrap();
        assert_eq!(json["name"], "podinfo");
        assert_eq!(json["namespace"], "test");
        assert_eq!(json["phase"], "Progressing");
        assert_eq!(json["metadata"]["cmd"], "hey");
        assert_eq!(json["checksum"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn the_checksum_changes_with_the_revision_and_the_configs() {
        let a = CanaryStatus {
            last_applied_spec: Some("abc".into()),
            ..Default::default()
        };
        let b = CanaryStatus {
            last_applied_spec: Some("def".into()),
            ..a.clone()
        };
        let c = CanaryStatus {
            tracked_configs: Some(BTreeMap::from([("configmap/x".into(), "1".into())])),
            ..a.clone()
        };
        assert_eq!(checksum(Some(&a)), checksum(Some(&a.clone())));
        assert_ne!(checksum(Some(&a)), checksum(Some(&b)));
        assert_ne!(checksum(Some(&a)), checksum(Some(&c)));
    }

    #[test]
    fn an_event_payload_keeps_the_event_fields_over_the_hooks_metadata() {
        let canary = Canary::test();
        let hook = CanaryWebhook {
            name: "events".into(),
            url: "http://t/".into(),
            metadata: BTreeMap::from([
                ("eventType".to_string(), "mine".to_string()),
                ("team".to_string(), "a".to_string()),
            ]),
            ..Default::default()
        };
        let status = CanaryStatus {
            phase: CanaryPhase::Failed,
            ..Default::default()
        };
        let p = event_payload(&canary, &status, &hook, "Canary rolled back", true, 1234);
        assert_eq!(p.phase, CanaryPhase::Failed);
        assert_eq!(p.metadata["eventMessage"], "Canary rolled back");
        assert_eq!(p.metadata["eventType"], "Warning");
        assert_eq!(p.metadata["timestamp"], "1234");
        assert_eq!(p.metadata["team"], "a");
    }
}
