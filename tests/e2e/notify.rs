//! Notifications end to end: local HTTP receivers stand in for Slack, Microsoft Teams
//! (Workflows) and a generic webhook, and check what serin posts for a promoted and a
//! rolled-back release, that a receiver failing twice still gets the rollback once, that
//! a controller killed between the decision and the send delivers it once after a
//! restart, and that the webhook address appears in no log, event or status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
};
use serde_json::{Value, json};
use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::eventually;
use crate::harness::with_namespace;

const SETTLE: Duration = Duration::from_secs(60);

/// One request a receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    body: Value,
    authorization: Option<String>,
    answered: u16,
}

#[derive(Default)]
struct Behaviour {
    received: Vec<Received>,
    /// Answer 503 to this many more requests to a path ending in the first text whose
    /// body contains the second.
    fail: Vec<(String, String, usize)>,
    /// Answer 503 to everything whose body contains one of these texts.
    down: Vec<String>,
}

/// A local webhook receiver on a free port; every path is a webhook.
#[derive(Clone)]
struct Receiver {
    state: Arc<Mutex<Behaviour>>,
    base: String,
}

async fn hook(
    State(state): State<Arc<Mutex<Behaviour>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let text = String::from_utf8_lossy(&body).to_string();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let mut s = state.lock().unwrap();
    let mut answer = StatusCode::OK;
    if s.down.iter().any(|d| text.contains(d.as_str())) {
        answer = StatusCode::SERVICE_UNAVAILABLE;
    } else if let Some(f) = s
        .fail
        .iter_mut()
        .find(|(p, t, n)| *n > 0 && uri.path().ends_with(p.as_str()) && text.contains(t.as_str()))
    {
        f.2 -= 1;
        answer = StatusCode::SERVICE_UNAVAILABLE;
    }
    if !body.is_object() {
        answer = StatusCode::BAD_REQUEST;
    }
    s.received.push(Received {
        path: uri.path().to_string(),
        body,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        answered: answer.as_u16(),
    });
    answer
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(Behaviour::default()));
        let app = Router::new().fallback(hook).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { state, base }
    }

    /// A webhook address with a secret path, as Slack's and Teams' are.
    fn address(&self, secret: &str) -> String {
        format!("{}/hooks/{secret}", self.base)
    }

    fn fail(&self, secret: &str, containing: &str, times: usize) {
        self.state
            .lock()
            .unwrap()
            .fail
            .push((secret.to_string(), containing.to_string(), times));
    }

    fn set_down(&self, containing: &[&str]) {
        self.state.lock().unwrap().down = containing.iter().map(|s| s.to_string()).collect();
    }

    fn received(&self, secret: &str) -> Vec<Received> {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.path.ends_with(secret))
            .cloned()
            .collect()
    }

    /// The requests to `secret` that were answered 2xx and mention `text`.
    fn accepted(&self, secret: &str, text: &str) -> Vec<Value> {
        self.received(secret)
            .into_iter()
            .filter(|r| r.answered < 300 && r.body.to_string().contains(text))
            .map(|r| r.body)
            .collect()
    }

    async fn await_accepted(&self, secret: &str, text: &str, timeout: Duration) -> Vec<Value> {
        eventually(&format!("a message mentioning {text}"), timeout, || async {
            let got = self.accepted(secret, text);
            if got.is_empty() {
                Err(format!(
                    "received: {:?}",
                    self.received(secret)
                        .iter()
                        .map(|r| (r.answered, r.body.to_string()))
                        .collect::<Vec<_>>()
                ))
            } else {
                Ok(got)
            }
        })
        .await
    }
}

/// A random secret, to look for where it must not be.
fn secret(kind: &str) -> String {
    format!("{kind}-{:016x}", rand::random::<u64>())
}

/// An AlertProvider whose address (and token) is in a Secret.
async fn provider(rollout: &Rollout, name: &str, type_: &str, address: &str, token: Option<&str>) {
    let mut data = json!({"address": address});
    if let Some(t) = token {
        data["token"] = json!(t);
    }
    rollout
        .apply(
            "test",
            &json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": format!("{name}-webhook")},
                "stringData": data,
            }),
        )
        .await;
    rollout
        .apply(
            "test",
            &json!({
                "apiVersion": "serin.dev/v1alpha1", "kind": "AlertProvider",
                "metadata": {"name": name},
                "spec": {"type": type_, "channel": "#releases", "username": "serin",
                         "secretRef": {"name": format!("{name}-webhook")}},
            }),
        )
        .await;
}

fn with_alerts(threshold: u32, alerts: Value) -> Value {
    let mut canary = canary_spec(threshold);
    canary["spec"]["analysis"]["alerts"] = alerts;
    canary
}

/// The Slack attachment field `title`.
fn slack_field(payload: &Value, title: &str) -> Option<String> {
    payload["attachments"][0]["fields"]
        .as_array()?
        .iter()
        .find(|f| f["title"] == title)
        .and_then(|f| f["value"].as_str())
        .map(str::to_string)
}

/// Every place a user or an operator can read: the whole controller log, the Canary's
/// events and its status.
async fn assert_nowhere(rollout: &Rollout, secrets: &[&str]) {
    let log = rollout.controller_log_full();
    let events = format!("{:?}", rollout.events().await);
    let status = serde_json::to_string(&rollout.canary().await.status).unwrap();
    for s in secrets {
        assert!(!log.contains(s), "the webhook address is in the log");
        assert!(!events.contains(s), "the webhook address is in an event");
        assert!(!status.contains(s), "the webhook address is in the status");
    }
    assert!(
        log.contains("notification sent"),
        "the log says what was sent (without the address)"
    );
}

async fn await_no_pending(rollout: &Rollout) {
    eventually("no pending notifications", SETTLE, || async {
        let pending = rollout
            .canary()
            .await
            .status
            .unwrap_or_default()
            .pending_notifications;
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("{pending:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_promoted_release_is_announced_on_slack_teams_and_the_default_provider() {
    with_namespace("e2e-notify-promote", |client, ns| async move {
        let receiver = Receiver::start().await;
        let (slack, teams, default) = (secret("slack"), secret("teams"), secret("default"));
        let mut rollout = Rollout::start(client, &ns).await;
        provider(&rollout, "slack", "slack", &receiver.address(&slack), None).await;
        provider(
            &rollout,
            "teams",
            "msteams",
            &receiver.address(&teams),
            None,
        )
        .await;
        provider(
            &rollout,
            "ops",
            "generic",
            &receiver.address(&default),
            None,
        )
        .await;
        let ops = format!("{ns}/ops");
        rollout
            .restart_controller_with(&["--alert-provider", &ops, "--alert-severity", "info"])
            .await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout
            .apply(
                "kustomize-controller",
                &with_alerts(
                    5,
                    json!([
                        {"name": "slack", "providerRef": {"name": "slack"}},
                        {"name": "teams", "severity": "info", "providerRef": {"name": "teams"}},
                    ]),
                ),
            )
            .await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        let revision = rollout
            .canary()
            .await
            .status
            .unwrap()
            .last_promoted_spec
            .unwrap();

        // Slack: the detection and the promotion, green, titled, with revision and image.
        let detected = receiver.await_accepted(&slack, "NewRevision", SETTLE).await;
        let detected = &detected[0];
        assert_eq!(detected["attachments"][0]["title"], format!("podinfo.{ns}"));
        assert_eq!(detected["attachments"][0]["color"], "good");
        assert_eq!(detected["channel"], "#releases");
        assert_eq!(
            slack_field(detected, "Revision").as_deref(),
            Some(revision.as_str())
        );
        assert_eq!(
            slack_field(detected, "Image"),
            Some(format!("{IMAGE}:6.0.1"))
        );
        let promoted = receiver.await_accepted(&slack, "Succeeded", SETTLE).await;
        assert_eq!(promoted.len(), 1, "one promotion message: {promoted:?}");
        assert_eq!(promoted[0]["attachments"][0]["color"], "good");
        assert_eq!(
            slack_field(&promoted[0], "Reason").as_deref(),
            Some("Succeeded")
        );
        assert!(
            receiver.accepted(&slack, "\"Advanced\"").is_empty(),
            "steps are not sent unless asked for"
        );

        // Teams: a Workflows Adaptive Card.
        let card = receiver.await_accepted(&teams, "Succeeded", SETTLE).await;
        let card = &card[0];
        assert_eq!(card["type"], "message");
        assert_eq!(
            card["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let content = &card["attachments"][0]["content"];
        assert_eq!(content["type"], "AdaptiveCard");
        assert_eq!(content["body"][0]["text"], format!("podinfo.{ns}"));
        assert!(
            content["body"][2]["facts"]
                .as_array()
                .unwrap()
                .contains(&json!({"title": "Revision", "value": revision}))
        );

        // The default provider of `serin run`: Flagger's event payload.
        let event = receiver.await_accepted(&default, "Succeeded", SETTLE).await;
        assert_eq!(event[0]["name"], "podinfo");
        assert_eq!(event[0]["namespace"], ns.as_str());
        assert_eq!(event[0]["phase"], "Succeeded");
        assert_eq!(event[0]["metadata"]["eventType"], "Normal");

        await_no_pending(&rollout).await;
        assert_nowhere(&rollout, &[&slack, &teams, &default]).await;
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_rollback_reaches_a_receiver_that_fails_twice_once_and_names_the_metric() {
    with_namespace("e2e-notify-rollback", |client, ns| async move {
        let receiver = Receiver::start().await;
        let (slack, pager) = (secret("slack"), secret("pager"));
        // Slack answers 503 to the first two posts of the rollback.
        receiver.fail(&slack, "RolledBack", 2);
        let rollout = Rollout::start(client, &ns).await;
        provider(&rollout, "slack", "slack", &receiver.address(&slack), None).await;
        provider(
            &rollout,
            "pager",
            "generic",
            &receiver.address(&pager),
            Some("s3cr3t-token"),
        )
        .await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout
            .apply(
                "kustomize-controller",
                &with_alerts(
                    1,
                    json!([
                        {"name": "slack", "severity": "info", "providerRef": {"name": "slack"}},
                        {"name": "pager", "severity": "error", "providerRef": {"name": "pager"}},
                    ]),
                ),
            )
            .await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.2, 40.0)
            .await;
        rollout.await_phase(CanaryPhase::Failed, SETTLE).await;

        let rollback = receiver.await_accepted(&slack, "RolledBack", SETTLE).await;
        assert_eq!(rollback.len(), 1, "delivered once: {rollback:?}");
        let attempts: Vec<u16> = receiver
            .received(&slack)
            .iter()
            .filter(|r| r.body.to_string().contains("RolledBack"))
            .map(|r| r.answered)
            .collect();
        assert_eq!(attempts, [503, 503, 200], "two failures, then delivered");
        let a = &rollback[0]["attachments"][0];
        assert_eq!(a["color"], "danger");
        let check = slack_field(&rollback[0], "Check").unwrap_or_default();
        assert!(
            check.starts_with("request-success-rate = ") && check.ends_with("(threshold >= 99)"),
            "the failing metric, its value and threshold: {check}"
        );
        assert_eq!(
            slack_field(&rollback[0], "Image"),
            Some(format!("{IMAGE}:6.0.2"))
        );

        // The error-only alert got the rollback and nothing else, with its token.
        await_no_pending(&rollout).await;
        let paged = receiver.received(&pager);
        assert!(!paged.is_empty(), "the pager got the rollback");
        for r in &paged {
            assert_eq!(r.body["metadata"]["reason"], "RolledBack", "{:?}", r.body);
            assert_eq!(r.body["metadata"]["severity"], "error");
            assert_eq!(r.authorization.as_deref(), Some("Bearer s3cr3t-token"));
        }
        assert_eq!(paged.len(), 1);
        assert_eq!(paged[0].body["metadata"]["metric"], "request-success-rate");
        assert_eq!(paged[0].body["phase"], "Failed");

        assert_nowhere(&rollout, &[&slack, &pager, "s3cr3t-token"]).await;
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_controller_killed_between_the_rollback_and_its_message_sends_it_once_after_restart() {
    with_namespace("e2e-notify-kill", |client, ns| async move {
        let receiver = Receiver::start().await;
        let slack = secret("slack");
        // The receiver is down for the rollback until the controller has been killed.
        receiver.set_down(&["RolledBack"]);
        let mut rollout = Rollout::start(client, &ns).await;
        provider(&rollout, "slack", "slack", &receiver.address(&slack), None).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout
            .apply(
                "kustomize-controller",
                &with_alerts(
                    1,
                    json!([{"name": "slack", "severity": "error", "providerRef": {"name": "slack"}}]),
                ),
            )
            .await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.2, 40.0)
            .await;
        let failed = rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
        let pending = failed.status.unwrap().pending_notifications;
        assert!(
            pending.iter().any(|p| p.reason == "RolledBack"),
            "the rollback's message is recorded with the decision: {pending:?}"
        );
        rollout.kill_controller().await;
        assert!(
            receiver.accepted(&slack, "RolledBack").is_empty(),
            "nothing was delivered before the kill"
        );
        let still = rollout
            .canary()
            .await
            .status
            .unwrap()
            .pending_notifications;
        assert!(
            still.iter().any(|p| p.reason == "RolledBack"),
            "still pending in status after the kill: {still:?}"
        );

        receiver.set_down(&[]);
        rollout.start_controller();
        receiver
            .await_accepted(&slack, "RolledBack", SETTLE)
            .await;
        await_no_pending(&rollout).await;
        // A later reconcile or restart must not send it again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        rollout.kill_controller().await;
        rollout.start_controller();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let delivered = receiver.accepted(&slack, "RolledBack");
        assert_eq!(delivered.len(), 1, "sent once, not twice: {delivered:?}");
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
