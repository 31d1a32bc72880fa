//! The `AlertProvider` resource: where a Canary's notifications go.
//!
//! Same shape as Flagger's `flagger.app/v1beta1` AlertProvider. Webhook addresses are secrets:
//! whoever holds one can post to the channel, so serin never writes them to logs, events or
//! status, and prefers them in a Secret (`secretRef`) over the plain `address` field.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretRef;
use super::schema;

/// A notification channel referenced by Canary alerts through `providerRef`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "AlertProvider",
    plural = "alertproviders",
    namespaced,
    category = "all",
    derive = "PartialEq",
    doc = "AlertProvider is a notification channel (Slack, Microsoft Teams, Discord or a generic webhook) that Canary alerts reference by name.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type")
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.address) || has(self.secretRef)",
    "message": "set address or secretRef (a Secret with key address) for the webhook URL",
}]))]
pub struct AlertProviderSpec {
    /// Kind of channel: slack, msteams, discord or generic (a JSON POST of the event).
    #[serde(rename = "type")]
    pub type_: AlertProviderType,
    /// Channel to post to, where the service supports it (Slack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Name the messages are posted as, where the service supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Webhook URL. It is a secret: prefer secretRef; serin never logs it. Ignored when
    /// secretRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP(S) proxy used to reach the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Secret in the AlertProvider's namespace holding the webhook URL (key address) and
    /// optionally a bearer token (key token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// Kind of notification channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = schema::drop_description)]
pub enum AlertProviderType {
    /// Slack incoming webhook.
    Slack,
    /// Microsoft Teams incoming webhook.
    Msteams,
    /// Discord webhook (Slack-compatible endpoint).
    Discord,
    /// Any HTTP endpoint, sent the event as JSON.
    Generic,
}

/// Secret keys an AlertProvider's `secretRef` may hold.
pub mod secret_keys {
    /// The webhook URL.
    pub const ADDRESS: &str = "address";
    /// An optional bearer token.
    pub const TOKEN: &str = "token";
}
