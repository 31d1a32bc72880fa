//! Discord webhooks, in Discord's own format: one embed with a colour, the title
//! `<name>.<namespace>`, the message as description and the facts as inline fields.
//! (Flagger posts its Slack payload to Discord's Slack-compatible `/slack` endpoint;
//! the native format needs no rewriting of the address.)

use serde_json::{Value, json};

use super::{Message, Notifier, Options, Tone};

pub struct Discord(pub Options);

/// Colours as Discord wants them: integers.
pub fn color(tone: Tone) -> u32 {
    match tone {
        Tone::Good => 0x2E_B6_7D,
        Tone::Warning => 0xEC_B2_2E,
        Tone::Bad => 0xE0_1E_5A,
    }
}

/// Discord's limits: 256 characters of title, 4096 of description, 1024 per field value.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl Notifier for Discord {
    fn payload(&self, m: &Message) -> Value {
        let fields: Vec<Value> = m
            .fields()
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": clip(&value, 1024), "inline": name != "Check"}))
            .collect();
        let mut payload = json!({
            "embeds": [{
                "title": clip(&m.title(), 256),
                "description": clip(&m.text, 4096),
                "color": color(m.tone()),
                "fields": fields,
                "timestamp": m.time.to_string(),
                "footer": {"text": "serin"},
            }],
        });
        if let Some(username) = &self.0.username {
            payload["username"] = json!(username);
        }
        payload
    }
}
