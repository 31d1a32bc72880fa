//! The `Canary` resource: which workload to roll out, how to route it and how to judge it.
//!
//! Field names and JSON shapes are Flagger's `flagger.app/v1beta1` Canary, so Flagger manifests
//! apply with only the `apiVersion` changed; serin's additions are optional and documented as such.
//! Defaults that Flagger applies in code are applied here by accessor methods, not by the schema,
//! so a manifest read back from the cluster is the manifest that was applied.
//!
//! This module holds the resource and the top level of its spec; the parts of the spec and the
//! status live in submodules by concern and are re-exported here.

mod analysis;
mod metric;
mod service;
mod status;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

pub use analysis::{
    AlertSeverity, CanaryAlert, CanaryAnalysis, CanaryWebhook, ConformanceTest, ConformanceWhen,
    ProviderRef, SessionAffinity, WebhookType,
};
pub use metric::{
    CanaryMetric, Direction, Judge, MetricComparison, NoDataPolicy, Sequential, TemplateRef,
    ThresholdRange,
};
pub use service::{CanaryService, CustomMetadata, ParentReference, UnmanagedMetadata};
pub use status::{
    CanaryPhase, CanaryStatus, CounterReadings, HISTORY_LIMIT, PendingNotification, Release,
    SequentialTestStatus, WorkloadCounters,
};

/// Flagger's default analysis interval.
pub const DEFAULT_ANALYSIS_INTERVAL: Duration = Duration::from_secs(60);
/// Flagger's default metric query window, as written into `{{ interval }}`.
pub const DEFAULT_METRIC_INTERVAL: &str = "1m";
/// Flagger's default progress deadline.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Flagger's default webhook request timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time between two evaluations of the sequential test between analysis ticks
/// (about one Prometheus scrape interval).
pub const DEFAULT_SEQUENTIAL_EVALUATION_INTERVAL: Duration = Duration::from_secs(5);
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
    /// Approves one traffic increase of a revision, written `<revision>@<weight>`: the
    /// step that leaves `<weight>` (`spec.approvals.trafficIncrease`).
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
    /// (default: the controller's `--provider`, istio unless set). Flagger's other providers
    /// (nginx, apisix, gloo, contour, appmesh, ...) are accepted so that its manifests
    /// apply, and reported in the status as not supported.
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

    /// Flagger's Ingress reference for the nginx provider. Accepted so that Flagger
    /// manifests apply; serin does not route through an Ingress, and a Canary with such a
    /// provider is reported as unsupported in its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<ProviderObjectRef>,

    /// Flagger's ApisixRoute reference for the apisix provider (accepted, not routed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<ProviderObjectRef>,

    /// Flagger's Gloo Upstream reference for the gloo provider (accepted, not routed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<ProviderObjectRef>,
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
    // Providers of Flagger that serin does not route. They are accepted so that a
    // Flagger manifest applies unchanged; the controller reports them as unsupported in
    // the status and an event, and changes nothing.
    #[serde(rename = "apisix")]
    Apisix,
    #[serde(rename = "appmesh")]
    AppMesh,
    #[serde(rename = "appmesh:v1beta2")]
    AppMeshV1beta2,
    #[serde(rename = "contour")]
    Contour,
    #[serde(rename = "gloo")]
    Gloo,
    #[serde(rename = "knative")]
    Knative,
    #[serde(rename = "kuma")]
    Kuma,
    #[serde(rename = "nginx")]
    Nginx,
    #[serde(rename = "osm")]
    Osm,
    #[serde(rename = "skipper")]
    Skipper,
    #[serde(rename = "smi:v1alpha1")]
    SmiV1alpha1,
    #[serde(rename = "smi:v1alpha2")]
    SmiV1alpha2,
    #[serde(rename = "smi:v1alpha3")]
    SmiV1alpha3,
    #[serde(rename = "traefik")]
    Traefik,
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
            Provider::Apisix => "apisix",
            Provider::AppMesh => "appmesh",
            Provider::AppMeshV1beta2 => "appmesh:v1beta2",
            Provider::Contour => "contour",
            Provider::Gloo => "gloo",
            Provider::Knative => "knative",
            Provider::Kuma => "kuma",
            Provider::Nginx => "nginx",
            Provider::Osm => "osm",
            Provider::Skipper => "skipper",
            Provider::SmiV1alpha1 => "smi:v1alpha1",
            Provider::SmiV1alpha2 => "smi:v1alpha2",
            Provider::SmiV1alpha3 => "smi:v1alpha3",
            Provider::Traefik => "traefik",
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

/// Reference to an object of a provider serin does not route (Ingress, ApisixRoute,
/// Gloo Upstream), kept as written.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderObjectRef {
    /// API version of the referenced object.
    pub api_version: String,
    /// Kind of the referenced object.
    pub kind: String,
    /// Name of the referenced object.
    pub name: String,
    /// Namespace of the referenced object (default: the Canary's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
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

/// Manual approvals a Canary requires (serin addition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approvals {
    /// Wait for serin.dev/approve-start: <revision> before a rollout starts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub start: bool,
    /// Wait for serin.dev/approve-traffic-increase: <revision>@<weight> before each traffic
    /// increase (one approval lets the one step that leaves <weight> through).
    #[serde(default, skip_serializing_if = "is_false")]
    pub traffic_increase: bool,
    /// Wait for serin.dev/approve-promotion: <revision> before promotion.
    #[serde(default, skip_serializing_if = "is_false")]
    pub promotion: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
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
