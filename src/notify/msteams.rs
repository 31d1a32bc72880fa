//! Microsoft Teams: an Adaptive Card in a `message` envelope, as a Workflows ("When a
//! Teams webhook request is received") webhook expects, and the legacy MessageCard that
//! Flagger sends to Office 365 connectors.

use serde_json::{Value, json};

use super::{Message, Notifier, Tone};

/// Adaptive Card for Workflows webhooks.
pub struct AdaptiveCard;

/// Office 365 connector card, Flagger's format.
pub struct MessageCard;

/// Whether `address` is a legacy Office 365 connector (which takes MessageCards).
pub fn is_legacy_connector(address: &str) -> bool {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let host = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    host == "outlook.office.com" || host.ends_with(".webhook.office.com")
}

/// Adaptive Card text colours.
fn card_color(tone: Tone) -> &'static str {
    match tone {
        Tone::Good => "Good",
        Tone::Warning => "Warning",
        Tone::Bad => "Attention",
    }
}

impl Notifier for AdaptiveCard {
    fn payload(&self, m: &Message) -> Value {
        let facts: Vec<Value> = m
            .fields()
            .into_iter()
            .map(|(title, value)| json!({"title": title, "value": value}))
            .collect();
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": m.title(),
                            "weight": "Bolder",
                            "size": "Medium",
                            "color": card_color(m.tone()),
                            "wrap": true,
                        },
                        {"type": "TextBlock", "text": m.text, "wrap": true},
                        {"type": "FactSet", "facts": facts},
                    ],
                },
            }],
        })
    }
}

impl Notifier for MessageCard {
    fn payload(&self, m: &Message) -> Value {
        let facts: Vec<Value> = m
            .fields()
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        // Flagger's colours: blue, red for errors.
        let theme = if m.tone() == Tone::Bad {
            "FF0000"
        } else {
            "0076D7"
        };
        json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": theme,
            "summary": m.title(),
            "sections": [{
                "activityTitle": m.text,
                "activitySubtitle": m.title(),
                "facts": facts,
            }],
        })
    }
}
