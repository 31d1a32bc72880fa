//! The `Canary` resource: which workload to roll out, how to route it and how to judge it.
//!
//! Field names and JSON shapes are Flagger's `flagger.app/v1beta1` Canary, so Flagger manifests
//! apply with only the `apiVersion` changed; serin's additions are optional and documented as such.
//! Defaults that Flagger applies in code are applied here by accessor methods, not by the schema,
//! so a manifest read back from the cluster is the manifest that was applied.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration;
use super::schema;

/// Flagger's default analysis interval.
pub const DEFAULT_ANALYSIS_INTERVAL: Duration = Duration::from_secs(60);
/// Flagger's default metric query window, as written into `{{ interval }}`.
pub const DEFAULT_METRIC_INTERVAL: &str = "1m";
/// Flagger's default progress deadline.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Flagger's default webhook request timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of a conformance test Job.
pub const DEFAULT_CONFORMANCE_TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Flagger's default session affinity cookie lifetime (one day).
pub const DEFAULT_SESSION_AFFINITY_MAX_AGE: i32 = 86_400;

/// Annotations on a Canary that approve or abort a revision; the value is the revision
/// (`status.lastAppliedSpec`) the person approves, so an approval never lets a later
/// revision through.
pub mod annotations {
    /// Approves the start of the rollout of a revision (`spec.approvals.start`).
    pub const APPROVE_START: &str = "serin.dev/approve-start";
    /// Approves the next traffic increase of a revision (`spec.approvals.trafficIncrease`).
    pub const APPROVE_TRAFFIC_INCREASE: &str = "serin.dev/approve-traffic-increase";
    /// Approves the promotion of a revision (`spec.approvals.promotion`).
    pub const APPROVE_PROMOTION: &str = "serin.dev/approve-promotion";
    /// Rolls back the named revision now.
    pub const ABORT: &str = "serin.dev/abort";
}

/// Condition types serin sets in `status.conditions`.
pub mod condition_types {
    /// Readiness in kstatus terms, so Flux health checks and
    /// `kubectl wait --for=condition=Ready` work.
    pub const READY: &str = "Ready";
    /// Result of the last analysis: True when the last revision was promoted (Flagger's).
    pub const PROMOTED: &str = "Promoted";
}

/// Specification of a Canary: the workload to roll out, how traffic reaches it and how each
/// new revision is analysed before promotion.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "Canary",
    plural = "canaries",
    shortname = "canary",
    namespaced,
    category = "all",
    status = "CanaryStatus",
    derive = "PartialEq",
    doc = "Canary is a progressive rollout of a workload: serin shifts traffic to each new revision step by step, checks it, and promotes or rolls it back.",
    // The JSON form keeps clippy's duplicated_attributes lint from firing on repeated keys.
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"FailedChecks","type":"integer","jsonPath":".status.failedChecks"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.lastAppliedSpec"}"#,
    printcolumn = r#"{"name":"LastTransitionTime","type":"date","jsonPath":".status.lastTransitionTime"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// Traffic provider for this canary: istio, linkerd, gatewayapi, gatewayapi:v1 or kubernetes
    /// (default istio, or the controller's --provider flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,

    /// Prometheus address used for the builtin metrics of this canary, overriding the
    /// controller's --metrics-server flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,

    /// The workload rolled out by this canary. Only Deployments are supported.
    pub target_ref: TargetRef,

    /// The autoscaler (HorizontalPodAutoscaler) of the target; serin creates a copy for the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,

    /// The Services and mesh routes serin generates for the target.
    pub service: CanaryService,

    /// How each new revision is analysed: schedule, traffic steps, metrics, webhooks and alerts.
    pub analysis: CanaryAnalysis,

    /// Seconds a rollout may wait for the canary or primary to become ready before it is rolled
    /// back (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,

    /// Promote new revisions without analysis (no traffic shifting, no metric checks).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_analysis: bool,

    /// On deletion of the Canary, restore the target to serve traffic as it did before serin
    /// managed it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub revert_on_deletion: bool,

    /// Suspend the canary: no new rollout starts and a running one pauses until resumed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,

    /// Manual approvals this canary requires (serin addition). An approval is an annotation on
    /// the Canary naming the revision it approves, e.g. serin.dev/approve-promotion: <revision>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Approvals>,
}

/// The traffic provider, i.e. which routing objects serin writes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[schemars(transform = schema::drop_description)]
pub enum Provider {
    /// Istio VirtualService and DestinationRules.
    #[default]
    #[serde(rename = "istio")]
    Istio,
    /// Gateway API HTTPRoute with a Service parent (GAMMA), queried with Linkerd's metrics.
    #[serde(rename = "linkerd")]
    Linkerd,
    /// Gateway API HTTPRoute.
    #[serde(rename = "gatewayapi")]
    GatewayApi,
    /// Gateway API HTTPRoute, `gateway.networking.k8s.io/v1` (same as `gatewayapi`).
    #[serde(rename = "gatewayapi:v1")]
    GatewayApiV1,
    /// Gateway API HTTPRoute as Flagger's `gatewayapi:v1beta1`; serin writes the
    /// `gateway.networking.k8s.io/v1` objects the v1.6 CRDs serve.
    #[serde(rename = "gatewayapi:v1beta1")]
    GatewayApiV1beta1,
    /// No mesh: blue/green by switching the Service selector.
    #[serde(rename = "kubernetes")]
    Kubernetes,
}

impl Provider {
    /// The name as written in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Istio => "istio",
            Provider::Linkerd => "linkerd",
            Provider::GatewayApi => "gatewayapi",
            Provider::GatewayApiV1 => "gatewayapi:v1",
            Provider::GatewayApiV1beta1 => "gatewayapi:v1beta1",
            Provider::Kubernetes => "kubernetes",
        }
    }

    /// Whether traffic is split with a Gateway API HTTPRoute.
    pub fn uses_gateway_api(self) -> bool {
        matches!(
            self,
            Provider::Linkerd
                | Provider::GatewayApi
                | Provider::GatewayApiV1
                | Provider::GatewayApiV1beta1
        )
    }
}

/// Reference to the workload rolled out by the canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the target, e.g. apps/v1.
    pub api_version: String,
    /// Kind of the target. Only Deployment is supported.
    #[schemars(extend("enum" = ["Deployment"]))]
    pub kind: String,
    /// Name of the target, in the Canary's namespace.
    pub name: String,
}

/// Reference to the autoscaler of the target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    /// API version of the autoscaler, e.g. autoscaling/v2.
    pub api_version: String,
    /// Kind of the autoscaler, e.g. HorizontalPodAutoscaler.
    pub kind: String,
    /// Name of the autoscaler, in the Canary's namespace.
    pub name: String,
    /// Queries for the primary's scaler, by trigger name, for scalers driven by queries
    /// (KEDA ScaledObject); `{{ target }}` stands for the primary workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_queries: Option<BTreeMap<String, String>>,
    /// Replica bounds for the primary's autoscaler, overriding those copied from the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

/// Replica bounds for a generated autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    /// Minimum number of replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// Maximum number of replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
}

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

/// How a new revision is analysed and how traffic moves to it.
///
/// The strategy follows from the fields, as in Flagger: `stepWeight`/`stepWeights` run a
/// weighted canary; `iterations` with `match` runs an A/B test; `iterations` alone runs
/// blue/green, with traffic mirrored to the canary when `mirror` is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.iterations) || has(self.stepWeight) || has(self.stepWeights)",
        "message": "set stepWeight or stepWeights for a weighted canary, or iterations for A/B testing and blue/green",
    },
    {
        "rule": "!has(self.stepWeight) || !has(self.maxWeight) || self.maxWeight >= self.stepWeight",
        "message": "maxWeight must be greater than or equal to stepWeight",
    },
    {
        "rule": "!has(self.judge) || !has(self.judge.passScore) || !has(self.judge.marginalScore) || self.judge.marginalScore <= self.judge.passScore",
        "message": "judge.marginalScore must not be greater than judge.passScore",
    },
]))]
pub struct CanaryAnalysis {
    /// Time between two analysis steps (default 60s), a duration such as 30s or 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Option<String>,

    /// Number of failed checks after which the canary is rolled back (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub threshold: Option<i32>,

    /// Highest traffic weight, in percent, routed to the canary before promotion
    /// (default 100, or the last of stepWeights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_weight: Option<i32>,

    /// Traffic weight, in percent, added to the canary at each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub step_weight: Option<i32>,

    /// Successive traffic weights, in percent, routed to the canary; strictly increasing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(range(min = 1, max = 100)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.isSorted() && self.all(w, self.exists_one(v, v == w))",
        "message": "stepWeights must be strictly increasing, e.g. [1, 5, 10, 25, 50]",
    }]))]
    pub step_weights: Vec<i32>,

    /// Traffic weight, in percent, moved to the primary at each promotion step
    /// (default: all at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub step_weight_promotion: Option<i32>,

    /// Number of analysis steps for A/B testing and blue/green.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub iterations: Option<i32>,

    /// Mirror (shadow) live traffic to the canary during blue/green analysis (Istio).
    #[serde(default, skip_serializing_if = "is_false")]
    pub mirror: bool,

    /// Percentage of traffic mirrored to the canary (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub mirror_weight: Option<i32>,

    /// Percentage of primary pods that must be available for the primary to count as ready
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub primary_ready_threshold: Option<i32>,

    /// Percentage of canary pods that must be available for the canary to count as ready
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub canary_ready_threshold: Option<i32>,

    /// A/B testing: requests matching any of these conditions (Istio HTTPMatchRequest, e.g.
    /// headers or cookies) go to the canary.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::free_form_object_list")]
    pub match_: Vec<serde_json::Value>,

    /// Keep a user on the version they first reached, with a cookie, during the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,

    /// Metric checks run at every analysis step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub metrics: Vec<CanaryMetric>,

    /// Webhooks called at the stages of the rollout (gates, tests, load generation, events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub webhooks: Vec<CanaryWebhook>,

    /// Notifications sent for this canary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub alerts: Vec<CanaryAlert>,

    /// How compared metrics are combined into a verdict (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Judge>,

    /// Sequential decisions: roll back as soon as the evidence says the canary is worse, and
    /// optionally promote early when it is clearly fine (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<Sequential>,

    /// Kubernetes Jobs run against the canary before it receives traffic; a failure rolls
    /// back (serin addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub conformance_tests: Vec<ConformanceTest>,
}

/// Cookie-based session affinity during the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// Name of the cookie that pins a user to the canary.
    pub cookie_name: String,
    /// Lifetime of the cookie in seconds (default 86400, one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_age: Option<i32>,
}

/// One metric check of the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryMetric {
    /// Name of the metric: request-success-rate and request-duration are builtin; any other
    /// name needs a templateRef (or a query).
    pub name: String,

    /// Window of the query, written into {{ interval }} (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub interval: Option<String>,

    /// Deprecated: highest accepted value; use thresholdRange.max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,

    /// Accepted range of the metric's value; a value outside it is a failed check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_range: Option<ThresholdRange>,

    /// Deprecated: inline Prometheus query; use templateRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,

    /// MetricTemplate that holds the query (default namespace: the Canary's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,

    /// Values for {{ variables.NAME }} in the template's query.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_variables: BTreeMap<String, String>,

    /// Judge the metric by comparing canary with primary (Mann-Whitney U) instead of a fixed
    /// threshold; the query then selects the compared workload with {{ target }}
    /// (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<MetricComparison>,
}

/// Accepted range of a metric value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
    "message": "thresholdRange.min must not be greater than thresholdRange.max",
}]))]
pub struct ThresholdRange {
    /// Lowest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Reference to a MetricTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    /// Name of the MetricTemplate.
    pub name: String,
    /// Namespace of the MetricTemplate (default: the Canary's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Statistical comparison of canary against primary for one metric (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.minRatio) || !has(self.maxRatio) || self.minRatio <= self.maxRatio",
    "message": "compare.minRatio must not be greater than compare.maxRatio",
}]))]
pub struct MetricComparison {
    /// Which change of the canary is bad: increase (e.g. latency, errors), decrease
    /// (e.g. success rate) or either (default increase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,

    /// Confidence level of the test and of the Hodges-Lehmann interval (default 0.98).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.5, max = 0.9999))]
    pub confidence: Option<f64>,

    /// Relative change tolerated before a significant difference counts, as a fraction of
    /// the primary's level (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub tolerance: Option<f64>,

    /// Effect-size limit: the canary fails when its mean is more than maxRatio times the
    /// primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_ratio: Option<f64>,

    /// Effect-size limit: the canary fails when its mean is less than minRatio times the
    /// primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub min_ratio: Option<f64>,

    /// What a step with no data for this metric counts as: fail, pass or hold (wait, neither
    /// pass nor fail) (default fail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoDataPolicy>,

    /// Weight of this metric in the judge's score (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub weight: Option<f64>,

    /// A failure of a critical metric fails the step whatever the score.
    #[serde(default, skip_serializing_if = "is_false")]
    pub critical: bool,
}

/// Which change of the canary's metric is a regression.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = schema::drop_description)]
pub enum Direction {
    /// Higher is worse (latency, error rate).
    #[default]
    Increase,
    /// Lower is worse (success rate, throughput).
    Decrease,
    /// Any significant change is a regression.
    Either,
}

/// What a metric with no data (no samples, NaN, unreachable provider) counts as.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = schema::drop_description)]
pub enum NoDataPolicy {
    /// A failed check.
    #[default]
    Fail,
    /// A passed check.
    Pass,
    /// Neither: the step waits for data without counting a failure.
    Hold,
}

/// Pass/Marginal/Fail scoring of compared metrics (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Judge {
    /// Lowest score, in percent of the metrics' weight, that passes a step (default 95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub pass_score: Option<f64>,
    /// Lowest score that is marginal rather than failed (default 75); a marginal step
    /// neither advances nor counts as a failed check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub marginal_score: Option<f64>,
}

/// Sequential decision settings (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sequential {
    /// Decide continuously instead of only at the end of each interval.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enabled: bool,
    /// Highest acceptable probability of rolling back a canary that is as good as the
    /// primary (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0001, max = 0.5))]
    pub false_rollback_rate: Option<f64>,
    /// Canary requests needed before any early decision (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_requests: Option<i64>,
    /// Also promote early when the canary is clearly no worse.
    #[serde(default, skip_serializing_if = "is_false")]
    pub promote_early: bool,
}

/// A conformance test: a Job run against the canary before it receives traffic
/// (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConformanceTest {
    /// Name of the test, unique within the Canary; part of the Job's name.
    #[schemars(length(min = 1, max = 40))]
    pub name: String,
    /// The Job to run. Its containers get SERIN_CANARY_ADDRESS and SERIN_PRIMARY_ADDRESS
    /// in their environment.
    pub template: JobSpec,
    /// Time the Job may run before it counts as failed (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<String>,
}

/// A webhook called during the rollout (Flagger's CanaryWebhook).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryWebhook {
    /// Name of the webhook.
    pub name: String,

    /// When the webhook is called: confirm-rollout, pre-rollout, rollout (default),
    /// confirm-traffic-increase, confirm-promotion, post-rollout, rollback or event.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<WebhookType>,

    /// URL the payload is POSTed to.
    pub url: String,

    /// Request timeout (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub timeout: Option<String>,

    /// Key-value pairs sent in the payload's metadata (e.g. the load tester's cmd).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,

    /// Send no alert when this webhook fails.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mute_alert: bool,

    /// Number of retries of a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retries: Option<i32>,
}

/// When a webhook is called, with Flagger's names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(transform = schema::drop_description)]
pub enum WebhookType {
    /// Gate before the rollout starts; the rollout waits until it answers 200.
    ConfirmRollout,
    /// Before any traffic reaches the canary; a failure counts as a failed check.
    PreRollout,
    /// At every analysis step; a failure counts as a failed check.
    #[default]
    Rollout,
    /// Gate before each traffic increase.
    ConfirmTrafficIncrease,
    /// Gate before promotion.
    ConfirmPromotion,
    /// After promotion or rollback.
    PostRollout,
    /// Polled during the analysis; answering 200 rolls back.
    Rollback,
    /// Receives every event serin emits for the canary.
    Event,
}

/// A notification target of the canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAlert {
    /// Name of the alert.
    pub name: String,
    /// Lowest severity sent: info (everything), warn or error (default info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<AlertSeverity>,
    /// The AlertProvider that delivers the notifications.
    pub provider_ref: ProviderRef,
}

/// Severity of a notification.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
#[schemars(transform = schema::drop_description)]
pub enum AlertSeverity {
    /// Every event.
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}

/// Reference to an AlertProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// Name of the AlertProvider.
    pub name: String,
    /// Namespace of the AlertProvider (default: the Canary's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Manual approvals a Canary requires (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approvals {
    /// Wait for serin.dev/approve-start: <revision> before a rollout starts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub start: bool,
    /// Wait for serin.dev/approve-traffic-increase: <revision> before each traffic increase.
    #[serde(default, skip_serializing_if = "is_false")]
    pub traffic_increase: bool,
    /// Wait for serin.dev/approve-promotion: <revision> before promotion.
    #[serde(default, skip_serializing_if = "is_false")]
    pub promotion: bool,
}

/// Observed state of a Canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::drop_property_defaults)]
pub struct CanaryStatus {
    /// Phase of the rollout.
    #[serde(default)]
    pub phase: CanaryPhase,

    /// Traffic weight, in percent, currently routed to the canary.
    #[serde(default)]
    pub canary_weight: i32,

    /// Failed checks in the current analysis.
    #[serde(default)]
    pub failed_checks: i32,

    /// Analysis steps completed in the current A/B or blue/green analysis.
    #[serde(default)]
    pub iterations: i32,

    /// Revision hash of the target's pod template and tracked configs last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_spec: Option<String>,

    /// Revision hash last promoted to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promoted_spec: Option<String>,

    /// Hash of each tracked ConfigMap and Secret, by kind/name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_configs: Option<BTreeMap<String, String>>,

    /// Time of the last phase change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// Generation of the Canary spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions, among them Ready and Promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Human-readable explanation of the phase, e.g. why the rollout failed (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Start of the current analysis: when the revision was detected, then when its first
    /// traffic step was routed (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_start_time: Option<Time>,

    /// Time of the last analysis step (serin addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_time: Option<Time>,

    /// Marginal steps in the current analysis: neither passed nor failed (serin addition).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub marginal_checks: i32,
}

/// Phase of a Canary's rollout, with Flagger's names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(transform = schema::drop_description)]
pub enum CanaryPhase {
    /// Creating the primary, Services and routes.
    #[default]
    Initializing,
    /// Primary serves all traffic; waiting for a new revision.
    Initialized,
    /// Waiting for an approval or a confirm webhook.
    Waiting,
    /// Analysis underway.
    Progressing,
    /// Waiting for approval of the promotion.
    WaitingPromotion,
    /// Copying the canary to the primary.
    Promoting,
    /// Routing all traffic back to the promoted primary.
    Finalising,
    /// The last revision was promoted.
    Succeeded,
    /// The last revision was rolled back.
    Failed,
    /// The Canary is being deleted.
    Terminating,
}

impl CanaryPhase {
    /// The name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryPhase::Initializing => "Initializing",
            CanaryPhase::Initialized => "Initialized",
            CanaryPhase::Waiting => "Waiting",
            CanaryPhase::Progressing => "Progressing",
            CanaryPhase::WaitingPromotion => "WaitingPromotion",
            CanaryPhase::Promoting => "Promoting",
            CanaryPhase::Finalising => "Finalising",
            CanaryPhase::Succeeded => "Succeeded",
            CanaryPhase::Failed => "Failed",
            CanaryPhase::Terminating => "Terminating",
        }
    }
}

impl std::fmt::Display for CanaryPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Parses an optional duration field, falling back to `default` when it is unset or (for
/// objects stored before validation existed) unparsable, as Flagger does.
fn duration_or(value: Option<&str>, default: Duration) -> Duration {
    value
        .and_then(|v| duration::parse(v).ok())
        .unwrap_or(default)
}

fn percent(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .map_or(default, |v| v.min(100))
}

impl CanarySpec {
    /// Name of the apex Service: `service.name`, or the target's name.
    pub fn service_name(&self) -> &str {
        self.service
            .name
            .as_deref()
            .unwrap_or(&self.target_ref.name)
    }

    /// Name of the primary workload, `<target>-primary`.
    pub fn primary_name(&self) -> String {
        format!("{}-primary", self.target_ref.name)
    }

    /// Name of the Service that reaches only the canary, `<svc>-canary`.
    pub fn canary_service_name(&self) -> String {
        format!("{}-canary", self.service_name())
    }

    /// Name of the Service that reaches only the primary, `<svc>-primary`.
    pub fn primary_service_name(&self) -> String {
        format!("{}-primary", self.service_name())
    }

    /// The traffic provider, istio when unset.
    pub fn provider(&self) -> Provider {
        self.provider.unwrap_or_default()
    }

    /// Time the canary or primary may take to become ready (default 600s).
    pub fn progress_deadline(&self) -> Duration {
        let secs = self
            .progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// Approval gates required, all off when unset.
    pub fn approvals(&self) -> Approvals {
        self.approvals.clone().unwrap_or_default()
    }
}

impl Canary {
    /// Name of the apex Service: `service.name`, or the target's name.
    pub fn service_name(&self) -> &str {
        self.spec.service_name()
    }

    /// Name of the primary workload, `<target>-primary`.
    pub fn primary_name(&self) -> String {
        self.spec.primary_name()
    }

    /// Name of the Service that reaches only the canary, `<svc>-canary`.
    pub fn canary_service_name(&self) -> String {
        self.spec.canary_service_name()
    }

    /// Name of the Service that reaches only the primary, `<svc>-primary`.
    pub fn primary_service_name(&self) -> String {
        self.spec.primary_service_name()
    }

    /// The traffic provider, istio when unset.
    pub fn provider(&self) -> Provider {
        self.spec.provider()
    }
}

impl CanaryAnalysis {
    /// Time between analysis steps (default 60s). Unlike Flagger there is no 10s floor:
    /// intervals down to 1s are honoured.
    pub fn interval(&self) -> Duration {
        duration_or(self.interval.as_deref(), DEFAULT_ANALYSIS_INTERVAL)
    }

    /// Failed checks that trigger a rollback (default 1).
    pub fn threshold(&self) -> u32 {
        self.threshold
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(1)
    }

    /// Highest weight routed to the canary: the last of stepWeights when set, else maxWeight,
    /// else 100 (Flagger's order).
    pub fn max_weight(&self) -> u32 {
        match self.step_weights.last() {
            Some(last) => percent(Some(*last), 100),
            None => percent(self.max_weight, 100),
        }
    }

    /// Weight moved back to the primary per promotion step; 100 (a single step) when unset.
    pub fn step_weight_promotion(&self) -> u32 {
        percent(self.step_weight_promotion, 100)
    }

    /// Percentage of traffic mirrored to the canary (default 100).
    pub fn mirror_weight(&self) -> u32 {
        percent(self.mirror_weight, 100)
    }

    /// Percentage of primary pods that must be available (default 100).
    pub fn primary_ready_threshold(&self) -> u32 {
        percent(self.primary_ready_threshold, 100)
    }

    /// Percentage of canary pods that must be available (default 100).
    pub fn canary_ready_threshold(&self) -> u32 {
        percent(self.canary_ready_threshold, 100)
    }

    /// Whether this analysis is weighted (stepWeight or stepWeights) rather than iterations.
    pub fn is_weighted(&self) -> bool {
        self.step_weight.is_some() || !self.step_weights.is_empty()
    }

    /// Judge settings, with defaults when unset.
    pub fn judge(&self) -> Judge {
        self.judge.clone().unwrap_or_default()
    }

    /// Sequential settings, disabled when unset.
    pub fn sequential(&self) -> Sequential {
        self.sequential.clone().unwrap_or_default()
    }
}

impl CanaryMetric {
    /// Query window (default 1m).
    pub fn interval(&self) -> Duration {
        duration_or(self.interval.as_deref(), Duration::from_secs(60))
    }

    /// Query window as written into `{{ interval }}` (default `1m`).
    pub fn interval_str(&self) -> &str {
        self.interval.as_deref().unwrap_or(DEFAULT_METRIC_INTERVAL)
    }

    /// Whether the metric is judged by comparison with the primary.
    pub fn is_compared(&self) -> bool {
        self.compare.is_some()
    }
}

impl MetricComparison {
    /// Which change is a regression (default increase).
    pub fn direction(&self) -> Direction {
        self.direction.unwrap_or_default()
    }

    /// Confidence level (default 0.98).
    pub fn confidence(&self) -> f64 {
        self.confidence.unwrap_or(0.98)
    }

    /// Tolerated relative change (default 0.25).
    pub fn tolerance(&self) -> f64 {
        self.tolerance.unwrap_or(0.25)
    }

    /// What no data counts as (default fail).
    pub fn no_data(&self) -> NoDataPolicy {
        self.no_data.unwrap_or_default()
    }

    /// Weight in the judge's score (default 1).
    pub fn weight(&self) -> f64 {
        self.weight.unwrap_or(1.0)
    }
}

impl Judge {
    /// Lowest passing score (default 95).
    pub fn pass_score(&self) -> f64 {
        self.pass_score.unwrap_or(95.0)
    }

    /// Lowest marginal score (default 75).
    pub fn marginal_score(&self) -> f64 {
        self.marginal_score.unwrap_or(75.0)
    }
}

impl Sequential {
    /// Highest acceptable false-rollback probability (default 0.01).
    pub fn false_rollback_rate(&self) -> f64 {
        self.false_rollback_rate.unwrap_or(0.01)
    }

    /// Canary requests needed before an early decision (default 200).
    pub fn min_requests(&self) -> u64 {
        self.min_requests
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(200)
    }
}

impl ConformanceTest {
    /// Time the Job may run (default 5m).
    pub fn timeout(&self) -> Duration {
        duration_or(self.timeout.as_deref(), DEFAULT_CONFORMANCE_TEST_TIMEOUT)
    }
}

impl CanaryWebhook {
    /// When the webhook is called (default rollout).
    pub fn webhook_type(&self) -> WebhookType {
        self.type_.unwrap_or_default()
    }

    /// Request timeout (default 10s).
    pub fn timeout(&self) -> Duration {
        duration_or(self.timeout.as_deref(), DEFAULT_WEBHOOK_TIMEOUT)
    }
}

impl CanaryAlert {
    /// Lowest severity sent (default info).
    pub fn severity(&self) -> AlertSeverity {
        self.severity.unwrap_or_default()
    }
}

impl SessionAffinity {
    /// Cookie lifetime in seconds (default 86400).
    pub fn max_age(&self) -> i32 {
        self.max_age.unwrap_or(DEFAULT_SESSION_AFFINITY_MAX_AGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(analysis: CanaryAnalysis) -> CanarySpec {
        CanarySpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "podinfo".into(),
            },
            service: CanaryService {
                port: 9898,
                ..Default::default()
            },
            analysis,
            ..Default::default()
        }
    }

    #[test]
    fn unset_fields_take_flaggers_defaults() {
        let s = spec(CanaryAnalysis::default());
        assert_eq!(s.provider(), Provider::Istio);
        assert_eq!(s.progress_deadline(), Duration::from_secs(600));
        assert_eq!(s.approvals(), Approvals::default());
        let a = &s.analysis;
        assert_eq!(a.interval(), Duration::from_secs(60));
        assert_eq!(a.threshold(), 1);
        assert_eq!(a.max_weight(), 100);
        assert_eq!(a.step_weight_promotion(), 100);
        assert_eq!(a.mirror_weight(), 100);
        assert_eq!(a.primary_ready_threshold(), 100);
        assert_eq!(a.canary_ready_threshold(), 100);
        assert_eq!(a.judge().pass_score(), 95.0);
        assert_eq!(a.judge().marginal_score(), 75.0);
        assert!(!a.sequential().enabled);
        assert_eq!(a.sequential().false_rollback_rate(), 0.01);
        assert_eq!(a.sequential().min_requests(), 200);
    }

    #[test]
    fn service_names_derive_from_the_service_or_the_target() {
        let mut s = spec(CanaryAnalysis::default());
        assert_eq!(s.service_name(), "podinfo");
        assert_eq!(s.primary_service_name(), "podinfo-primary");
        assert_eq!(s.canary_service_name(), "podinfo-canary");
        s.service.name = Some("frontend".into());
        assert_eq!(s.service_name(), "frontend");
        assert_eq!(s.primary_service_name(), "frontend-primary");
        assert_eq!(s.canary_service_name(), "frontend-canary");
        // The primary workload follows the target, not the Service.
        assert_eq!(s.primary_name(), "podinfo-primary");
    }

    #[test]
    fn max_weight_is_the_last_step_weight_when_steps_are_listed() {
        let stepped = CanaryAnalysis {
            step_weights: vec![1, 5, 25, 60],
            max_weight: Some(90),
            ..Default::default()
        };
        assert_eq!(stepped.max_weight(), 60);
        let linear = CanaryAnalysis {
            step_weight: Some(10),
            max_weight: Some(50),
            ..Default::default()
        };
        assert_eq!(linear.max_weight(), 50);
        assert!(linear.is_weighted());
    }

    #[test]
    fn short_intervals_are_honoured_unlike_flagger() {
        let a = CanaryAnalysis {
            interval: Some("1s".into()),
            ..Default::default()
        };
        assert_eq!(a.interval(), Duration::from_secs(1));
    }

    #[test]
    fn metric_webhook_and_alert_defaults() {
        let metric: CanaryMetric =
            serde_json::from_value(serde_json::json!({"name": "request-success-rate"})).unwrap();
        assert_eq!(metric.interval(), Duration::from_secs(60));
        assert_eq!(metric.interval_str(), "1m");
        assert!(!metric.is_compared());

        let hook: CanaryWebhook =
            serde_json::from_value(serde_json::json!({"name": "load", "url": "http://t/"}))
                .unwrap();
        assert_eq!(hook.webhook_type(), WebhookType::Rollout);
        assert_eq!(hook.timeout(), Duration::from_secs(10));

        let alert: CanaryAlert = serde_json::from_value(
            serde_json::json!({"name": "on-call", "providerRef": {"name": "slack"}}),
        )
        .unwrap();
        assert_eq!(alert.severity(), AlertSeverity::Info);

        let compare = MetricComparison::default();
        assert_eq!(compare.direction(), Direction::Increase);
        assert_eq!(compare.confidence(), 0.98);
        assert_eq!(compare.tolerance(), 0.25);
        assert_eq!(compare.no_data(), NoDataPolicy::Fail);
        assert_eq!(compare.weight(), 1.0);
    }

    #[test]
    fn serin_additions_parse_with_their_wire_names() {
        let analysis: CanaryAnalysis = serde_json::from_value(serde_json::json!({
            "interval": "10s",
            "stepWeights": [5, 10, 50],
            "judge": {"passScore": 90, "marginalScore": 70},
            "sequential": {"enabled": true, "falseRollbackRate": 0.05, "minRequests": 100, "promoteEarly": true},
            "metrics": [{
                "name": "latency",
                "templateRef": {"name": "latency"},
                "compare": {"direction": "either", "noData": "hold", "maxRatio": 1.2, "critical": true}
            }],
            "conformanceTests": [{
                "name": "smoke",
                "timeout": "2m",
                "template": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "curl"}]}}}
            }]
        }))
        .unwrap();
        assert_eq!(analysis.judge().pass_score(), 90.0);
        assert_eq!(analysis.sequential().min_requests(), 100);
        let compare = analysis.metrics[0].compare.as_ref().unwrap();
        assert_eq!(compare.direction(), Direction::Either);
        assert_eq!(compare.no_data(), NoDataPolicy::Hold);
        assert!(compare.critical);
        assert_eq!(
            analysis.conformance_tests[0].timeout(),
            Duration::from_secs(120)
        );

        let approvals: Approvals =
            serde_json::from_value(serde_json::json!({"trafficIncrease": true})).unwrap();
        assert!(approvals.traffic_increase && !approvals.start && !approvals.promotion);
    }

    #[test]
    fn phase_and_enums_use_flaggers_spelling() {
        assert_eq!(CanaryPhase::default(), CanaryPhase::Initializing);
        assert_eq!(
            serde_json::to_value(CanaryPhase::WaitingPromotion).unwrap(),
            "WaitingPromotion"
        );
        assert_eq!(
            serde_json::to_value(WebhookType::ConfirmTrafficIncrease).unwrap(),
            "confirm-traffic-increase"
        );
        assert_eq!(
            serde_json::to_value(Provider::GatewayApiV1).unwrap(),
            "gatewayapi:v1"
        );
        for p in [
            Provider::Istio,
            Provider::Linkerd,
            Provider::GatewayApi,
            Provider::GatewayApiV1,
            Provider::Kubernetes,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        let status: CanaryStatus = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(status.phase, CanaryPhase::Initializing);
        assert_eq!(status.phase.to_string(), "Initializing");
    }
}
