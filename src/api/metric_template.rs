//! The `MetricTemplate` resource: a reusable metric query and where to run it.
//!
//! Same shape as Flagger's `flagger.app/v1beta1` MetricTemplate, restricted to Prometheus.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretRef;
use super::schema;

/// A metric query referenced by Canary metrics through `templateRef`.
///
/// The query may use `{{ name }}`, `{{ namespace }}`, `{{ target }}`, `{{ service }}`,
/// `{{ interval }}` and `{{ variables.NAME }}`; an unknown variable is an error, never an
/// empty string.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "MetricTemplate",
    plural = "metrictemplates",
    namespaced,
    category = "all",
    derive = "PartialEq",
    doc = "MetricTemplate is a metric query, and the server to run it on, that Canary metrics reference by name.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider.type")
)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateSpec {
    /// The metrics server the query runs on.
    pub provider: MetricTemplateProvider,
    /// The query, with {{ name }}, {{ namespace }}, {{ target }}, {{ service }},
    /// {{ interval }} and {{ variables.NAME }} placeholders.
    #[schemars(length(min = 1))]
    pub query: String,
}

/// The metrics server of a MetricTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateProvider {
    /// Kind of metrics server. Only prometheus is supported.
    #[serde(rename = "type")]
    pub type_: MetricProviderType,
    /// HTTP(S) address of the server (default: the controller's --metrics-server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Secret with the server's credentials: keys username and password (basic auth) or
    /// token (bearer), and optionally address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// HTTP headers added to every query, e.g. a tenant id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Skip verification of the server's TLS certificate.
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_skip_verify: bool,
}

/// Kind of metrics server.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = schema::drop_description)]
pub enum MetricProviderType {
    /// A Prometheus-compatible HTTP API.
    #[default]
    Prometheus,
}

fn is_false(b: &bool) -> bool {
    !*b
}
