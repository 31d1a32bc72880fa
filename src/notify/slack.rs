//! Slack incoming webhooks: one legacy attachment, coloured by outcome, titled
//! `<name>.<namespace>`, with the facts as fields (the shape Flagger sends, plus a title
//! and a plain-text fallback for notifications on phones).

use serde_json::{Value, json};

use super::{Message, Notifier, Options, Tone};

pub struct Slack(pub Options);

/// Slack's named attachment colours.
pub fn color(tone: Tone) -> &'static str {
    match tone {
        Tone::Good => "good",
        Tone::Warning => "warning",
        Tone::Bad => "danger",
    }
}

impl Notifier for Slack {
    fn payload(&self, m: &Message) -> Value {
        let fields: Vec<Value> = m
            .fields()
            .into_iter()
            .map(
                |(title, value)| json!({"title": title, "value": value, "short": title != "Check"}),
            )
            .collect();
        let mut payload = json!({
            "text": format!("{}: {}", m.title(), m.text),
            "icon_emoji": ":rocket:",
            "attachments": [{
                "color": color(m.tone()),
                "fallback": format!("{}: {}", m.title(), m.text),
                "author_name": m.title(),
                "title": m.title(),
                "text": m.text,
                "mrkdwn_in": ["text"],
                "fields": fields,
                "footer": "serin",
                "ts": m.time.as_second(),
            }],
        });
        if let Some(channel) = &self.0.channel {
            payload["channel"] = json!(channel);
        }
        if let Some(username) = &self.0.username {
            payload["username"] = json!(username);
        }
        payload
    }
}
