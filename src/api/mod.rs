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
    ConformanceWhen, CounterReadings, CustomMetadata, Direction, HISTORY_LIMIT, Judge,
    MetricComparison, NoDataPolicy, ParentReference, PendingNotification, Provider,
    ProviderObjectRef, ProviderRef, Release, ScalerReplicas, Sequential, SequentialTestStatus,
    SessionAffinity, TargetRef, TemplateRef, ThresholdRange, UnmanagedMetadata, WebhookType,
    WorkloadCounters,
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
///
/// Prefer this over `Canary::crd()` and friends: it also reflows the field descriptions
/// for `kubectl explain`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Canary::crd(), MetricTemplate::crd(), AlertProvider::crd()]
        .into_iter()
        .map(reflow_descriptions)
        .collect()
}

/// Joins the lines of each paragraph of every description.
///
/// Doc comments are wrapped at 100 columns in the source; `kubectl explain` wraps text
/// itself, so the source line breaks would show as ragged lines. Paragraph breaks and
/// bulleted lists stay.
fn reflow_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = reflow(text);
                        }
                        _ => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    fn reflow(text: &str) -> String {
        text.split("\n\n")
            .map(|paragraph| {
                // Lists and indented blocks (in the embedded Kubernetes types) keep their lines.
                let structured = paragraph
                    .lines()
                    .any(|line| line.starts_with(['-', '*', ' ']));
                if structured {
                    paragraph.to_string()
                } else {
                    paragraph.lines().collect::<Vec<_>>().join(" ")
                }
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes to JSON");
    walk(&mut value["spec"]["versions"]);
    serde_json::from_value(value).expect("reflowing descriptions keeps the CRD valid")
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn schema(kind: &str) -> Value {
        let crd = crds()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind)
            .expect("kind is served");
        serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap())
            .unwrap()
            .get("openAPIV3Schema")
            .cloned()
            .unwrap()
    }

    fn at<'a>(schema: &'a Value, path: &str) -> &'a Value {
        path.split('.').fold(schema, |s, key| match key {
            "[]" => &s["items"],
            _ => &s["properties"][key],
        })
    }

    fn rules(schema: &Value) -> Vec<&str> {
        schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["rule"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn provider_is_an_enum_of_the_supported_meshes_and_flaggers_other_providers() {
        let canary = schema("Canary");
        let mut providers: Vec<&str> = at(&canary, "spec.provider")["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        providers.sort_unstable();
        let mut expected = vec![
            "istio",
            "linkerd",
            "gatewayapi",
            "gatewayapi:v1",
            "gatewayapi:v1beta1",
            "kubernetes",
            "apisix",
            "appmesh",
            "appmesh:v1beta2",
            "contour",
            "gloo",
            "knative",
            "kuma",
            "nginx",
            "osm",
            "skipper",
            "smi:v1alpha1",
            "smi:v1alpha2",
            "smi:v1alpha3",
            "traefik",
        ];
        expected.sort_unstable();
        assert_eq!(providers, expected);
        assert_eq!(
            at(&canary, "spec.targetRef.kind")["enum"],
            json!(["Deployment"])
        );
    }

    #[test]
    fn weights_are_bounded_percentages() {
        let analysis = at(&schema("Canary"), "spec.analysis").clone();
        for (field, min, max) in [
            ("stepWeight", 1.0, Some(100.0)),
            ("maxWeight", 1.0, Some(100.0)),
            ("stepWeightPromotion", 1.0, Some(100.0)),
            ("mirrorWeight", 0.0, Some(100.0)),
            ("stepWeights.[]", 1.0, Some(100.0)),
            ("threshold", 1.0, None),
            ("iterations", 1.0, None),
        ] {
            let s = at(&analysis, field);
            assert_eq!(s["minimum"], json!(min), "{field} minimum");
            assert_eq!(
                s.get("maximum").cloned(),
                max.map(|m| json!(m)),
                "{field} maximum"
            );
        }
    }

    #[test]
    fn cross_field_rules_are_cel() {
        let canary = schema("Canary");
        let analysis = at(&canary, "spec.analysis");
        let analysis_rules = rules(analysis);
        assert!(
            analysis_rules
                .iter()
                .any(|r| r.contains("self.maxWeight >= self.stepWeight"))
        );
        assert!(
            analysis_rules
                .iter()
                .any(|r| r.contains("has(self.iterations)"))
        );
        assert!(rules(at(analysis, "stepWeights"))[0].contains("isSorted()"));
        assert!(rules(at(analysis, "interval"))[0].starts_with("self.matches("));
        assert!(rules(at(analysis, "metrics.[].interval"))[0].starts_with("self.matches("));
        assert!(rules(at(analysis, "webhooks.[].timeout"))[0].starts_with("self.matches("));
        let alert_provider = schema("AlertProvider");
        assert!(rules(at(&alert_provider, "spec"))[0].contains("has(self.secretRef)"));
    }

    #[test]
    fn every_rule_has_a_message_for_people() {
        fn walk(s: &Value, found: &mut usize) {
            for rule in s["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let message = rule["message"].as_str().unwrap_or_default();
                assert!(message.len() > 20, "rule {rule} needs a message");
                *found += 1;
            }
            match s {
                Value::Object(map) => map.values().for_each(|v| walk(v, found)),
                Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        let mut found = 0;
        for kind in ["Canary", "MetricTemplate", "AlertProvider"] {
            walk(&schema(kind), &mut found);
        }
        assert!(found >= 10, "only {found} rules");
    }

    #[test]
    fn mesh_settings_are_kept_as_written() {
        let service = at(&schema("Canary"), "spec.service").clone();
        for field in [
            "trafficPolicy",
            "retries",
            "headers",
            "corsPolicy",
            "rewrite",
            "match.[]",
        ] {
            let s = at(&service, field);
            assert_eq!(s["type"], "object", "{field}");
            assert_eq!(s["x-kubernetes-preserve-unknown-fields"], true, "{field}");
        }
        assert_eq!(
            at(&service, "targetPort")["x-kubernetes-int-or-string"],
            true
        );
    }

    #[test]
    fn schemas_are_structural_and_described() {
        // Structural: no type-less combinators; described: every serin field explains itself
        // in `kubectl explain` (the embedded JobSpec is described by Kubernetes).
        fn walk(s: &Value, path: &str) {
            for keyword in ["anyOf", "oneOf", "allOf", "$ref"] {
                assert!(s.get(keyword).is_none(), "{path} uses {keyword}");
            }
            if let Some(properties) = s["properties"].as_object() {
                for (name, child) in properties {
                    let child_path = format!("{path}.{name}");
                    if child_path.ends_with("conformanceTests.[].template") {
                        continue;
                    }
                    let description = child["description"].as_str();
                    assert!(description.is_some(), "{child_path} has no description");
                    assert!(
                        !description.unwrap().replace("\n\n", "").contains('\n'),
                        "{child_path}: source line breaks left in the description"
                    );
                    walk(child, &child_path);
                }
            }
            if let Some(items) = s.get("items") {
                walk(items, &format!("{path}.[]"));
            }
        }
        for kind in ["Canary", "MetricTemplate", "AlertProvider"] {
            walk(&schema(kind), kind);
        }
    }

    #[test]
    fn status_schema_sets_no_defaults() {
        let canary = schema("Canary");
        let status = at(&canary, "status");
        for (name, field) in status["properties"].as_object().unwrap() {
            assert!(
                field.get("default").is_none(),
                "status.{name} has a default"
            );
        }
        assert_eq!(
            at(status, "phase")["enum"],
            json!([
                "Initializing",
                "Initialized",
                "Waiting",
                "Progressing",
                "WaitingPromotion",
                "Promoting",
                "Finalising",
                "Succeeded",
                "Failed",
                "Terminating"
            ])
        );
    }

    #[test]
    fn crds_are_namespaced_with_status_and_columns() {
        let all = crds();
        let names: Vec<_> = all
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "canaries.serin.dev",
                "metrictemplates.serin.dev",
                "alertproviders.serin.dev"
            ]
        );
        assert!(all.iter().all(|c| c.spec.scope == "Namespaced"));
        let canary = &all[0];
        assert_eq!(
            canary.spec.names.short_names,
            Some(vec!["canary".to_string()])
        );
        let version = &canary.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Status", ".status.phase"),
                ("Weight", ".status.canaryWeight"),
                ("FailedChecks", ".status.failedChecks"),
                ("Revision", ".status.lastAppliedSpec"),
                ("LastTransitionTime", ".status.lastTransitionTime"),
            ]
        );
    }

    #[test]
    fn crds_yaml_is_one_document_per_crd() {
        let yaml = crds_yaml();
        let parsed: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|doc| CustomResourceDefinition::deserialize(doc).expect("each document is a CRD"))
            .collect();
        assert_eq!(parsed, crds());
        assert_eq!(yaml, crds_yaml(), "output is deterministic");
    }
}
