//! A generic JSON webhook: Flagger's event payload (`name`, `namespace`, `phase`,
//! `checksum`, `metadata.eventMessage`, `metadata.eventType`, `metadata.timestamp`), so
//! receivers written for Flagger's event webhooks work unchanged. serin adds its
//! structured fields to `metadata`, all strings as in Flagger's map, among them the
//! idempotency `key` a receiver can deduplicate on.

use serde_json::{Map, Value, json};

use super::{Message, Notifier};
use crate::api::AlertSeverity;

pub struct Generic;

impl Notifier for Generic {
    fn payload(&self, m: &Message) -> Value {
        let mut metadata = Map::new();
        let mut put = |k: &str, v: String| {
            metadata.insert(k.to_string(), Value::String(v));
        };
        put("eventMessage", m.text.clone());
        let warning = m.severity != AlertSeverity::Info;
        put(
            "eventType",
            if warning { "Warning" } else { "Normal" }.to_string(),
        );
        put("timestamp", m.time.as_millisecond().to_string());
        put("reason", m.reason.clone());
        put(
            "severity",
            match m.severity {
                AlertSeverity::Info => "info",
                AlertSeverity::Warn => "warn",
                AlertSeverity::Error => "error",
            }
            .to_string(),
        );
        put("weight", m.weight.to_string());
        put("key", m.key.clone());
        if let Some(r) = &m.revision {
            put("revision", r.clone());
        }
        if let Some(i) = &m.image {
            put("image", i.clone());
        }
        if let Some(metric) = &m.metric {
            put("metric", metric.clone());
        }
        if let Some(v) = m.value {
            put("value", v.to_string());
        }
        if let Some(t) = &m.threshold {
            put("threshold", t.clone());
        }
        json!({
            "name": m.name,
            "namespace": m.namespace,
            "phase": m.phase.as_str(),
            "checksum": m.revision.clone().unwrap_or_default(),
            "metadata": metadata,
        })
    }
}
