//! The custom resources serin serves (API group `serin.dev`, version `v1alpha1`).
//!
//! `Canary`, `MetricTemplate` and `AlertProvider` keep Flagger's field names, so Flagger
//! manifests apply with only the `apiVersion` changed; the CRD YAML in `crds/` is generated
//! from these types by [`crds_yaml`].

pub mod alert_provider;
pub mod canary;
pub mod duration;
pub mod metric_template;
mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use alert_provider::{AlertProvider, AlertProviderSpec, AlertProviderType};
pub use canary::{
    AlertSeverity, Approvals, AutoscalerRef, Canary, CanaryAlert, CanaryAnalysis, CanaryMetric,
    CanaryPhase, CanaryService, CanarySpec, CanaryStatus, CanaryWebhook, ConformanceTest,
    CustomMetadata, Direction, Judge, MetricComparison, NoDataPolicy, ParentReference, Provider,
    ProviderRef, ScalerReplicas, Sequential, SessionAffinity, TargetRef, TemplateRef,
    ThresholdRange, WebhookType,
};
pub use duration::DurationError;
pub use metric_template::{
    MetricProviderType, MetricTemplate, MetricTemplateProvider, MetricTemplateSpec,
};

/// API group of every serin resource.
pub const GROUP: &str = "serin.dev";
/// API version of every serin resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "serin.dev/v1alpha1";

/// Reference to a Secret in the referring object's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// The three CRDs, in a fixed order: Canary, MetricTemplate, AlertProvider.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Canary::crd(), MetricTemplate::crd(), AlertProvider::crd()]
}

/// One CRD as YAML, as committed in `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    // The CRD is plain data built from our own types; serializing it cannot fail.
    serde_yaml::to_string(crd).expect("a CRD serializes to YAML")
}

/// All CRDs as one multi-document YAML stream, as printed by `serin crds`.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| format!("---\n{}", crd_yaml(crd)))
        .collect()
}
