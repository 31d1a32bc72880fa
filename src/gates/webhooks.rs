//! The HTTP side of Flagger's webhooks: POST the payload, with the hook's `timeout` per
//! attempt (default 10s) and `retries` more attempts on the answers go-retryablehttp
//! retries, as Flagger calls them. What the answers mean is decided in `gates`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::{info, warn};

use super::{Answer, Called, Payload};
use crate::api::{Canary, CanaryPhase, CanaryStatus, CanaryWebhook, WebhookType};

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

async fn attempt(url: &str, payload: &Payload, timeout: Duration) -> Answer {
    let request = http().post(url).json(payload).timeout(timeout);
    match request.send().await {
        Ok(response) => {
            let code = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            Answer::Status(code, body)
        }
        // The URL itself is never quoted: it may hold a token.
        Err(e) if e.is_timeout() => Answer::Unreachable(format!("no answer within {timeout:?}")),
        Err(e) if e.is_connect() => Answer::Unreachable("connection failed".to_string()),
        Err(e) if e.is_builder() => Answer::Unreachable("invalid URL".to_string()),
        Err(_) => Answer::Unreachable("request failed".to_string()),
    }
}

/// Calls one webhook: the first attempt and up to `retries` more.
pub async fn call(hook: &CanaryWebhook, payload: &Payload) -> Called {
    let started = Instant::now();
    let retries = u32::try_from(hook.retries.unwrap_or(0)).unwrap_or(0);
    let mut answer = attempt(&hook.url, payload, hook.timeout()).await;
    for n in 0..retries {
        if !answer.retryable() {
            break;
        }
        tokio::time::sleep(super::backoff(n)).await;
        answer = attempt(&hook.url, payload, hook.timeout()).await;
    }
    let latency = started.elapsed();
    let called = Called {
        name: hook.name.clone(),
        kind: hook.webhook_type(),
        mute_alert: hook.mute_alert,
        answer,
        latency,
    };
    if called.answer.passed() {
        info!(webhook = %called.name, kind = ?called.kind, latency_ms = latency.as_millis() as u64, "webhook passed");
    } else {
        warn!(webhook = %called.name, kind = ?called.kind, latency_ms = latency.as_millis() as u64, answer = %called.finding(), "webhook did not pass");
    }
    called
}

/// Calls every webhook of `kind` at once, so a step waits for the slowest, not the sum.
pub async fn call_all(canary: &Canary, kind: WebhookType, phase: CanaryPhase) -> Vec<Called> {
    join_all(
        super::of_kind(canary, kind)
            .map(|hook| async move { call(hook, &super::payload(canary, phase, hook)).await }),
    )
    .await
}

/// Calls the `post-rollout` webhooks in the background: their failures are logged and
/// recorded, never fatal, and they never delay the reconcile.
pub fn spawn_post_rollout(canary: &Canary, status: &CanaryStatus) -> bool {
    if !super::has(canary, WebhookType::PostRollout) {
        return false;
    }
    let mut canary = canary.clone();
    canary.status = Some(status.clone());
    let phase = status.phase;
    tokio::spawn(async move {
        for called in call_all(&canary, WebhookType::PostRollout, phase).await {
            if !called.answer.passed() {
                warn!(canary = %canary.metadata.name.as_deref().unwrap_or_default(), webhook = %called.name, answer = %called.finding(), "post-rollout webhook failed (not fatal)");
            }
        }
    });
    true
}

/// Sends an event to the `event` webhooks in the background.
pub fn spawn_event(canary: &Canary, status: &CanaryStatus, message: &str, warning: bool) {
    if !super::has(canary, WebhookType::Event) {
        return;
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let calls: Vec<(CanaryWebhook, Payload)> = super::of_kind(canary, WebhookType::Event)
        .map(|hook| {
            (
                hook.clone(),
                super::event_payload(canary, status, hook, message, warning, now),
            )
        })
        .collect();
    tokio::spawn(async move {
        join_all(
            calls
                .iter()
                .map(|(hook, payload)| async move { call(hook, payload).await }),
        )
        .await;
    });
}
