//! The `spec.service` part of a Canary: the Services serin generates for the target
//! (`<svc>`, `<svc>-primary`, `<svc>-canary`) and how the mesh routes to them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_false;
use crate::api::schema;

/// The Services (`<svc>`, `<svc>-primary`, `<svc>-canary`) and mesh routes serin generates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryService {
    /// Name of the generated apex Service (default: the target's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// Port of the generated Services.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Name of the Service port (default http).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,

    /// Container port number or name the Services forward to (default: port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,

    /// Application protocol of the Service port (Service appProtocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,

    /// Add every container port of the target to the generated Services.
    #[serde(default, skip_serializing_if = "is_false")]
    pub port_discovery: bool,

    /// Timeout of HTTP or gRPC requests on the generated route, e.g. 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<String>,

    /// Istio gateways the VirtualService is bound to (default: the mesh gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,

    /// Gateway API parents the HTTPRoute attaches to: Gateways, or for east-west traffic
    /// (Linkerd, Istio ambient) the apex Service itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_refs: Vec<ParentReference>,

    /// Host names of the VirtualService or HTTPRoute (default: the Service name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,

    /// Generate the VirtualService as an Istio delegate (no hosts, no gateways).
    #[serde(default, skip_serializing_if = "is_false")]
    pub delegation: bool,

    /// Istio traffic policy of the generated DestinationRules, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub traffic_policy: Option<serde_json::Value>,

    /// Istio retry policy of the generated route, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub retries: Option<serde_json::Value>,

    /// Istio header operations of the generated route, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub headers: Option<serde_json::Value>,

    /// Istio CORS policy of the generated route, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub cors_policy: Option<serde_json::Value>,

    /// Match conditions (Istio HTTPMatchRequest) the generated route applies to.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::free_form_object_list")]
    pub match_: Vec<serde_json::Value>,

    /// URI rewrite (Istio HTTPRewrite) of the generated route, passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::free_form_object")]
    pub rewrite: Option<serde_json::Value>,

    /// Timeout of the requests from the route to the backends (Gateway API
    /// `timeouts.backendRequest`), e.g. 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub backend_timeout: Option<String>,

    /// Gateway API request mirrors (HTTPRequestMirrorFilter) of the generated route,
    /// passed through unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::free_form_object_list")]
    pub mirror: Vec<serde_json::Value>,

    /// Make the `-primary` and `-canary` Services headless (`clusterIP: None`). Set it
    /// when the Canary is created: the API server does not let a Service change between
    /// headless and not.
    #[serde(default, skip_serializing_if = "is_false")]
    pub headless: bool,

    /// Traffic distribution of the generated Services (Service `trafficDistribution`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["PreferClose", "PreferSameZone", "PreferSameNode"]))]
    pub traffic_distribution: Option<String>,

    /// Labels and annotations of the generated objects that other controllers manage.
    /// Accepted for Flagger compatibility: serin writes with server-side apply, which
    /// never removes a label or annotation serin did not set, so these keys are left
    /// alone whether listed or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged_metadata: Option<UnmanagedMetadata>,

    /// App Mesh mesh name (Flagger's appmesh provider; accepted, not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,

    /// App Mesh backends (Flagger's appmesh provider; accepted, not used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,

    /// Labels and annotations added to the apex Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apex: Option<CustomMetadata>,

    /// Labels and annotations added to the primary Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<CustomMetadata>,

    /// Labels and annotations added to the canary Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CustomMetadata>,
}

/// A Gateway API ParentReference.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// API group of the parent (default gateway.networking.k8s.io; "core" or "" for a Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the parent (default Gateway; Service for east-west traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the parent.
    pub name: String,
    /// Namespace of the parent (default: the Canary's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Listener (section) of the parent to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Port of the parent to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Metadata keys of generated objects that other controllers manage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnmanagedMetadata {
    /// Annotation keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Label keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// Labels and annotations to set on a generated object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetadata {
    /// Labels to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
