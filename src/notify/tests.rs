use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::api::{
    AlertProviderSpec, AlertProviderType, CanaryAlert, CanaryMetric, ProviderRef, ThresholdRange,
};
use crate::rollout::fixtures::{Clock, observed, plan_with, ready};
use crate::rollout::plan::{Gates, Verdict};
use crate::rollout::verdict::Finding;

fn alert(name: &str, severity: Option<AlertSeverity>) -> CanaryAlert {
    CanaryAlert {
        name: name.into(),
        severity,
        provider_ref: ProviderRef {
            name: format!("{name}-provider"),
            namespace: None,
        },
        steps: false,
    }
}

fn with_alerts(alerts: Vec<CanaryAlert>) -> Canary {
    let mut canary = Canary::test().threshold(1);
    canary.spec.analysis.alerts = alerts;
    canary.spec.analysis.metrics = vec![CanaryMetric {
        name: "request-success-rate".into(),
        threshold_range: Some(ThresholdRange {
            min: Some(99.0),
            max: None,
        }),
        ..Default::default()
    }];
    canary.metadata.uid = Some("uid-1".into());
    canary
}

fn rollback_message() -> Message {
    Message {
        name: "podinfo".into(),
        namespace: "test".into(),
        reason: "RolledBack".into(),
        severity: AlertSeverity::Error,
        phase: CanaryPhase::Failed,
        revision: Some("5f7d9c".into()),
        image: Some("ghcr.io/stefanprodan/podinfo:6.0.2".into()),
        weight: 0,
        metric: Some("request-success-rate".into()),
        value: Some(80.456),
        threshold: Some(">= 99".into()),
        text: "Canary rolled back: request-success-rate 80.46 < 99".into(),
        key: "test/podinfo/uid-1/5f7d9c/RolledBack/Failed/w0/f1/m0".into(),
        time: "2026-12-01T05:00:00Z".parse::<Timestamp>().unwrap(),
    }
}

fn promoted_message() -> Message {
    Message {
        reason: "Succeeded".into(),
        severity: AlertSeverity::Info,
        phase: CanaryPhase::Succeeded,
        metric: None,
        value: None,
        threshold: None,
        text: "Promotion of 5f7d9c completed, canary scaled to zero".into(),
        ..rollback_message()
    }
}

#[test]
fn severity_filtering_is_flaggers() {
    use AlertSeverity::*;
    let table = [
        (Info, Info, true),
        (Info, Warn, true),
        (Info, Error, true),
        (Warn, Info, false),
        (Warn, Warn, true),
        (Warn, Error, true),
        (Error, Info, false),
        (Error, Warn, false),
        (Error, Error, true),
    ];
    for (threshold, severity, sent) in table {
        assert_eq!(
            accepts(threshold, severity),
            sent,
            "{threshold:?} alert, {severity:?} event"
        );
    }
}

#[test]
fn a_rollback_is_recorded_for_every_alert_that_wants_errors_in_the_same_status() {
    let clock = Clock::start();
    let canary = with_alerts(vec![
        alert("everything", None),
        alert("warnings", Some(AlertSeverity::Warn)),
        alert("errors", Some(AlertSeverity::Error)),
    ])
    .with_status(|s| {
        s.phase(CanaryPhase::Progressing)
            .settled_on("rev-a")
            .applied("rev-b")
            .weight(30)
            .analysis_started_at(clock.ago_secs(120))
            .last_analysed_at(clock.ago_secs(60))
    });
    let world = observed()
        .target("rev-b", ready())
        .primary("rev-a", ready());
    let finding = Finding {
        metric: Some("request-success-rate".into()),
        value: Some(80.0),
        message: "request-success-rate 80 < 99".into(),
    };
    let mut plan = plan_with(
        &canary,
        &world,
        Gates::default(),
        Some(Verdict::Fail(finding)),
        clock.now(),
    );
    enqueue(
        &mut plan.status,
        &canary,
        &plan.events,
        Some("podinfo:6.0.2"),
        Some(AlertSeverity::Error),
        clock.now(),
    );
    let pending = &plan.status.pending_notifications;
    let rollback = pending
        .iter()
        .find(|p| p.reason == "RolledBack")
        .expect("a rollback notification");
    assert_eq!(
        rollback.targets,
        vec!["everything", "warnings", "errors", DEFAULT_TARGET]
    );
    assert_eq!(rollback.metric.as_deref(), Some("request-success-rate"));
    assert_eq!(rollback.value, Some(80.0));
    assert_eq!(rollback.threshold.as_deref(), Some(">= 99"));
    assert_eq!(rollback.image.as_deref(), Some("podinfo:6.0.2"));
    assert_eq!(rollback.phase, CanaryPhase::Failed);
    let halt = pending
        .iter()
        .find(|p| p.reason == "CheckFailed")
        .expect("a warning for the failed check");
    assert_eq!(halt.targets, vec!["everything", "warnings"]);
}

#[test]
fn the_same_event_is_recorded_once() {
    let canary = with_alerts(vec![alert("a", None)]);
    let event = crate::rollout::plan::Event {
        reason: "Succeeded",
        severity: crate::rollout::plan::Severity::Info,
        revision: Some("r".into()),
        weight: 0,
        metric: None,
        value: None,
        message: "promoted".into(),
        key: "k1".into(),
        muted: false,
    };
    let mut status = CanaryStatus::default();
    let now = Timestamp::now();
    enqueue(
        &mut status,
        &canary,
        std::slice::from_ref(&event),
        None,
        None,
        now,
    );
    enqueue(&mut status, &canary, &[event], None, None, now);
    assert_eq!(status.pending_notifications.len(), 1);
}

#[test]
fn steps_go_only_to_alerts_that_ask_for_them() {
    let mut stepper = alert("steps", None);
    stepper.steps = true;
    let canary = with_alerts(vec![alert("quiet", None), stepper]);
    let event = crate::rollout::plan::Event {
        reason: "Advanced",
        severity: crate::rollout::plan::Severity::Info,
        revision: Some("r".into()),
        weight: 20,
        metric: None,
        value: None,
        message: "Advance r canary weight 20".into(),
        key: "k".into(),
        muted: false,
    };
    assert_eq!(
        targets(&canary, &event, Some(AlertSeverity::Info)),
        vec!["steps"]
    );
}

#[test]
fn nothing_is_recorded_without_alerts() {
    let canary = with_alerts(vec![]);
    let event = crate::rollout::plan::Event {
        reason: "RolledBack",
        severity: crate::rollout::plan::Severity::Error,
        revision: None,
        weight: 0,
        metric: None,
        value: None,
        message: "rolled back".into(),
        key: "k".into(),
        muted: false,
    };
    let mut status = CanaryStatus::default();
    enqueue(&mut status, &canary, &[event], None, None, Timestamp::now());
    assert!(status.pending_notifications.is_empty());
}

#[test]
fn a_delivered_target_leaves_and_the_last_one_removes_the_entry() {
    let mut status = CanaryStatus::default();
    status.pending_notifications.push(PendingNotification {
        key: "k".into(),
        targets: vec!["a".into(), "b".into()],
        ..Default::default()
    });
    assert!(delivered(&mut status, "k", "a"));
    assert_eq!(status.pending_notifications[0].targets, vec!["b"]);
    assert!(!delivered(&mut status, "k", "a"), "already gone");
    assert!(delivered(&mut status, "k", "b"));
    assert!(status.pending_notifications.is_empty());
    assert!(!delivered(&mut status, "k", "b"));
}

#[test]
fn the_outbox_is_bounded_and_drops_the_oldest() {
    let canary = with_alerts(vec![alert("a", None)]);
    let mut status = CanaryStatus::default();
    for i in 0..(MAX_PENDING + 5) {
        let event = crate::rollout::plan::Event {
            reason: "NewRevision",
            severity: crate::rollout::plan::Severity::Info,
            revision: None,
            weight: 0,
            metric: None,
            value: None,
            message: String::new(),
            key: format!("k{i}"),
            muted: false,
        };
        enqueue(&mut status, &canary, &[event], None, None, Timestamp::now());
    }
    assert_eq!(status.pending_notifications.len(), MAX_PENDING);
    assert_eq!(status.pending_notifications[0].key, "k5");
}

#[test]
fn slack_rollback_is_red_titled_and_names_the_failing_check() {
    let payload = slack::Slack(Options {
        channel: Some("#releases".into()),
        username: Some("serin".into()),
    })
    .payload(&rollback_message());
    assert_eq!(payload["channel"], "#releases");
    assert_eq!(payload["username"], "serin");
    let a = &payload["attachments"][0];
    assert_eq!(a["color"], "danger");
    assert_eq!(a["title"], "podinfo.test");
    assert_eq!(
        a["text"],
        "Canary rolled back: request-success-rate 80.46 < 99"
    );
    let fields: Vec<(String, String)> = a["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_string(),
                f["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let get = |t: &str| {
        fields
            .iter()
            .find(|(k, _)| k == t)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("Revision"), "5f7d9c");
    assert_eq!(get("Image"), "ghcr.io/stefanprodan/podinfo:6.0.2");
    assert_eq!(get("Weight"), "0%");
    assert_eq!(
        get("Check"),
        "request-success-rate = 80.46 (threshold >= 99)"
    );
    assert_eq!(get("Reason"), "RolledBack");
    assert!(
        payload["text"]
            .as_str()
            .unwrap()
            .starts_with("podinfo.test: ")
    );
}

#[test]
fn slack_promotion_is_green_and_has_no_check() {
    let payload = slack::Slack(Options::default()).payload(&promoted_message());
    assert_eq!(payload["attachments"][0]["color"], "good");
    assert!(payload.get("channel").is_none());
    let fields = payload["attachments"][0]["fields"].as_array().unwrap();
    assert!(fields.iter().all(|f| f["title"] != "Check"));
}

#[test]
fn teams_workflows_gets_an_adaptive_card_in_a_message() {
    let payload = msteams::AdaptiveCard.payload(&rollback_message());
    assert_eq!(payload["type"], "message");
    let attachment = &payload["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(card["body"][0]["text"], "podinfo.test");
    assert_eq!(card["body"][0]["color"], "Attention");
    assert_eq!(card["body"][2]["type"], "FactSet");
    assert!(card["body"][2]["facts"].as_array().unwrap().contains(
        &json!({"title": "Check", "value": "request-success-rate = 80.46 (threshold >= 99)"})
    ));
}

#[test]
fn teams_legacy_connector_gets_flaggers_message_card() {
    let payload = msteams::MessageCard.payload(&rollback_message());
    assert_eq!(payload["@type"], "MessageCard");
    assert_eq!(payload["@context"], "http://schema.org/extensions");
    assert_eq!(payload["themeColor"], "FF0000");
    assert_eq!(payload["summary"], "podinfo.test");
    assert_eq!(payload["sections"][0]["activitySubtitle"], "podinfo.test");
    assert_eq!(
        payload["sections"][0]["facts"][0],
        json!({"name": "Revision", "value": "5f7d9c"})
    );
    let ok = msteams::MessageCard.payload(&promoted_message());
    assert_eq!(ok["themeColor"], "0076D7");
}

#[test]
fn teams_format_follows_the_address() {
    assert!(msteams::is_legacy_connector(
        "https://contoso.webhook.office.com/webhookb2/abc@def/IncomingWebhook/x/y"
    ));
    assert!(!msteams::is_legacy_connector(
        "https://prod-12.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?x=y"
    ));
    assert!(!msteams::is_legacy_connector(
        "http://127.0.0.1:4000/webhook.office.com"
    ));
    let spec = AlertProviderSpec {
        type_: AlertProviderType::Msteams,
        channel: None,
        username: None,
        address: None,
        proxy: None,
        secret_ref: None,
    };
    let m = promoted_message();
    assert_eq!(
        notifier(&spec, "https://x.webhook.office.com/a").payload(&m)["@type"],
        "MessageCard"
    );
    assert_eq!(
        notifier(&spec, "https://x.logic.azure.com/a").payload(&m)["type"],
        "message"
    );
}

#[test]
fn discord_gets_an_embed_with_an_integer_colour() {
    let payload = discord::Discord(Options {
        channel: None,
        username: Some("serin".into()),
    })
    .payload(&rollback_message());
    assert_eq!(payload["username"], "serin");
    let embed = &payload["embeds"][0];
    assert_eq!(embed["title"], "podinfo.test");
    assert_eq!(embed["color"], 0xE01E5A);
    assert_eq!(embed["timestamp"], "2026-12-01T05:00:00Z");
    assert_eq!(
        embed["fields"][0],
        json!({"name": "Revision", "value": "5f7d9c", "inline": true})
    );
}

#[test]
fn generic_is_flaggers_event_payload_with_the_key() {
    let payload = generic::Generic.payload(&rollback_message());
    assert_eq!(payload["name"], "podinfo");
    assert_eq!(payload["namespace"], "test");
    assert_eq!(payload["phase"], "Failed");
    assert_eq!(payload["checksum"], "5f7d9c");
    let md = &payload["metadata"];
    assert_eq!(md["eventType"], "Warning");
    assert_eq!(
        md["eventMessage"],
        "Canary rolled back: request-success-rate 80.46 < 99"
    );
    assert_eq!(
        md["key"],
        "test/podinfo/uid-1/5f7d9c/RolledBack/Failed/w0/f1/m0"
    );
    assert_eq!(md["metric"], "request-success-rate");
    assert!(md.as_object().unwrap().values().all(|v| v.is_string()));
}

#[test]
fn a_waiting_gate_names_the_command_and_is_amber() {
    let clock = Clock::start();
    let canary = with_alerts(vec![alert("a", None)])
        .requires_start_approval()
        .with_status(|s| s.phase(CanaryPhase::Succeeded).settled_on("rev-a"));
    let world = observed()
        .target("rev-b", ready())
        .primary("rev-a", ready());
    let mut plan = plan_with(&canary, &world, Gates::default(), None, clock.now());
    enqueue(
        &mut plan.status,
        &canary,
        &plan.events,
        None,
        None,
        clock.now(),
    );
    let waiting = plan
        .status
        .pending_notifications
        .iter()
        .find(|p| p.reason == "WaitingApproval")
        .expect("a waiting notification");
    assert!(
        waiting.message.contains("serin.dev/approve-start=rev-b"),
        "{}",
        waiting.message
    );
    let m = Message::from_pending("podinfo", "test", waiting);
    assert_eq!(m.tone(), Tone::Warning);
    assert_eq!(
        m.command().as_deref(),
        Some("kubectl annotate canary/podinfo -n test --overwrite serin.dev/approve-start=rev-b")
    );
}

#[test]
fn a_progress_deadline_rollback_names_the_deadline() {
    let clock = Clock::start();
    let canary = with_alerts(vec![alert("errors", Some(AlertSeverity::Error))])
        .progress_deadline_secs(60)
        .with_status(|s| {
            s.phase(CanaryPhase::Progressing)
                .settled_on("rev-a")
                .applied("rev-b")
                .analysis_started_at(clock.ago_secs(120))
        });
    let world = observed()
        .target(
            "rev-b",
            crate::rollout::fixtures::not_ready("0/2 pods ready"),
        )
        .primary("rev-a", ready());
    let mut plan = plan_with(&canary, &world, Gates::default(), None, clock.now());
    enqueue(
        &mut plan.status,
        &canary,
        &plan.events,
        None,
        None,
        clock.now(),
    );
    let rollback = &plan.status.pending_notifications[0];
    assert_eq!(rollback.reason, "RolledBack");
    assert_eq!(rollback.targets, vec!["errors"]);
    let m = Message::from_pending("podinfo", "test", rollback);
    assert_eq!(m.check().as_deref(), Some("progress-deadline"));
    assert!(m.text.contains("progress deadline"), "{}", m.text);
    assert_eq!(m.tone(), Tone::Bad);
}

#[test]
fn a_waiting_traffic_increase_names_the_approval_of_that_step() {
    let waiting = crate::api::PendingNotification {
        key: "k".into(),
        reason: "WaitingApproval".into(),
        phase: CanaryPhase::Progressing,
        revision: Some("rev-b".into()),
        weight: 20,
        ..Default::default()
    };
    let m = Message::from_pending("podinfo", "test", &waiting);
    assert_eq!(
        m.command().as_deref(),
        Some(
            "kubectl annotate canary/podinfo -n test --overwrite serin.dev/approve-traffic-increase=rev-b@20"
        )
    );
}
