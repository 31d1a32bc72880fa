//! Flagger manifests, with only `apiVersion` changed, must parse into serin's types, serialize
//! back without losing a field, and fit the generated schema so the apiserver keeps them whole.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serin::api::{
    self, AlertProvider, AlertProviderType, Canary, MetricProviderType, MetricTemplate, Provider,
    WebhookType,
};

fn fixture(name: &str) -> Value {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flagger")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// JSON does not tell 99 from 99.0; serde_json does, so compare numbers by value.
fn normalize(value: &Value) -> Value {
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64().expect("finite number")),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let original = fixture(name);
    let typed: T = serde_json::from_value(original.clone())
        .unwrap_or_else(|e| panic!("{name} does not parse into the Rust type: {e}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(
        normalize(&back),
        normalize(&original),
        "{name} changed in a parse/serialize round trip"
    );
    typed
}

/// Checks `value` against a structural schema the way the apiserver prunes and validates:
/// every field must be declared (or under preserve-unknown-fields), enums and ranges hold,
/// required fields are present. Returns the problems found, with JSON paths.
fn schema_problems(value: &Value, schema: &Value, path: &str, problems: &mut Vec<String>) {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            problems.push(format!("{path}: not an int or string"));
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(format!("{path}: {value} not one of {allowed:?}"));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            problems.push(format!("{path}: {n} < minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            problems.push(format!("{path}: {n} > maximum {max}"));
        }
    }
    let ty = schema.get("type").and_then(Value::as_str);
    match (ty, value) {
        (Some("object"), Value::Object(map)) => {
            if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
                return;
            }
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = required.as_str().expect("required names are strings");
                if !map.contains_key(key) {
                    problems.push(format!("{path}: missing required field {key}"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    schema_problems(child, child_schema, &child_path, problems);
                } else if let Some(child_schema) = additional {
                    schema_problems(child, child_schema, &child_path, problems);
                } else if path.is_empty()
                    && ["apiVersion", "kind", "metadata"].contains(&key.as_str())
                {
                    // Served by the apiserver itself, not by the CRD schema.
                } else {
                    problems.push(format!("{child_path}: not in the schema, would be pruned"));
                }
            }
        }
        (Some("array"), Value::Array(items)) => {
            let item_schema = schema.get("items").expect("arrays declare items");
            for (i, item) in items.iter().enumerate() {
                schema_problems(item, item_schema, &format!("{path}[{i}]"), problems);
            }
        }
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => {}
        (Some("integer"), v) if v.is_i64() || v.is_u64() => {}
        (Some("number"), Value::Number(_)) => {}
        (_, Value::Null) if schema.get("nullable") == Some(&Value::Bool(true)) => {}
        (Some(ty), v) => problems.push(format!("{path}: {v} is not of type {ty}")),
        (None, _) => {}
    }
}

fn schema_of(kind: &str) -> Value {
    let crd = api::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .expect("kind is served");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("every version has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

fn assert_fits_crd(name: &str, kind: &str) {
    let value = fixture(name);
    assert_eq!(value["apiVersion"], api::API_VERSION, "{name}: apiVersion");
    let mut problems = Vec::new();
    schema_problems(&value, &schema_of(kind), "", &mut problems);
    assert!(
        problems.is_empty(),
        "{name} does not fit the {kind} schema:\n{}",
        problems.join("\n")
    );
}

const CANARIES: [&str; 6] = [
    "istio-canary.yaml",
    "linkerd-gatewayapi-canary.yaml",
    "gatewayapi-canary.yaml",
    "blue-green-canary.yaml",
    "ab-testing-canary.yaml",
    "every-field-canary.yaml",
];

#[test]
fn flagger_canaries_round_trip_without_losing_a_field() {
    for name in CANARIES {
        round_trip::<Canary>(name);
    }
}

#[test]
fn flagger_canaries_fit_the_generated_schema() {
    for name in CANARIES {
        assert_fits_crd(name, "Canary");
    }
    assert_fits_crd("metrictemplate.yaml", "MetricTemplate");
    assert_fits_crd("alertprovider.yaml", "AlertProvider");
}

#[test]
fn the_schema_check_catches_unknown_fields_and_bad_values() {
    let mut value = fixture("istio-canary.yaml");
    value["spec"]["analysis"]["stepWeight"] = serde_json::json!(0);
    value["spec"]["provider"] = serde_json::json!("linkerd2");
    value["spec"]["service"]["portname"] = serde_json::json!("http");
    let mut problems = Vec::new();
    schema_problems(&value, &schema_of("Canary"), "", &mut problems);
    let all = problems.join("\n");
    assert!(
        all.contains(".spec.analysis.stepWeight: 0 < minimum 1"),
        "{all}"
    );
    assert!(
        all.contains(".spec.provider: \"linkerd2\" not one of"),
        "{all}"
    );
    assert!(
        all.contains(".spec.service.portname: not in the schema"),
        "{all}"
    );
}

#[test]
fn istio_tutorial_canary_reads_as_flagger_means_it() {
    let canary: Canary = round_trip("istio-canary.yaml");
    assert_eq!(canary.provider(), Provider::Istio);
    assert_eq!(canary.service_name(), "podinfo");
    assert_eq!(canary.primary_name(), "podinfo-primary");
    assert_eq!(canary.canary_service_name(), "podinfo-canary");
    assert_eq!(canary.primary_service_name(), "podinfo-primary");
    let analysis = &canary.spec.analysis;
    assert_eq!(analysis.interval(), std::time::Duration::from_secs(60));
    assert_eq!(analysis.threshold(), 5);
    assert_eq!(analysis.max_weight(), 50);
    assert_eq!(analysis.step_weight, Some(10));
    assert_eq!(analysis.step_weight_promotion(), 100);
    assert_eq!(
        analysis.metrics[0].threshold_range.as_ref().unwrap().min,
        Some(99.0)
    );
    assert_eq!(analysis.metrics[1].interval_str(), "30s");
    let hooks: Vec<_> = analysis.webhooks.iter().map(|w| w.webhook_type()).collect();
    assert_eq!(hooks, [WebhookType::PreRollout, WebhookType::Rollout]);
    assert_eq!(
        analysis.webhooks[1].timeout(),
        std::time::Duration::from_secs(5)
    );
    assert_eq!(
        canary.spec.service.traffic_policy.as_ref().unwrap()["tls"]["mode"],
        "DISABLE"
    );
    assert_eq!(canary.spec.service.retries.as_ref().unwrap()["attempts"], 3);
    assert_eq!(
        canary.spec.progress_deadline(),
        std::time::Duration::from_secs(60)
    );
}

#[test]
fn linkerd_canary_attaches_to_its_service() {
    let canary: Canary = round_trip("linkerd-gatewayapi-canary.yaml");
    let parent = &canary.spec.service.gateway_refs[0];
    assert_eq!(parent.kind.as_deref(), Some("Service"));
    assert_eq!(parent.group.as_deref(), Some("core"));
    assert_eq!(parent.port, Some(9898));
    assert_eq!(
        canary.spec.analysis.interval(),
        std::time::Duration::from_secs(30)
    );
}

#[test]
fn blue_green_and_ab_canaries_use_iterations() {
    let blue_green: Canary = round_trip("blue-green-canary.yaml");
    assert_eq!(blue_green.provider(), Provider::Kubernetes);
    assert!(blue_green.spec.service.port_discovery);
    assert_eq!(blue_green.spec.analysis.iterations, Some(10));
    assert!(!blue_green.spec.analysis.is_weighted());

    let ab: Canary = round_trip("ab-testing-canary.yaml");
    assert_eq!(ab.spec.analysis.match_.len(), 2);
    assert_eq!(
        ab.spec.analysis.match_[1]["headers"]["cookie"]["regex"],
        "^(.*?;)?(type=insider)(;.*)?$"
    );
}

#[test]
fn flagger_metric_template_and_alert_provider_round_trip() {
    let template: MetricTemplate = round_trip("metrictemplate.yaml");
    assert_eq!(template.spec.provider.type_, MetricProviderType::Prometheus);
    assert!(template.spec.query.contains("{{ interval }}"));

    let provider: AlertProvider = round_trip("alertprovider.yaml");
    assert_eq!(provider.spec.type_, AlertProviderType::Slack);
    assert_eq!(
        provider.spec.secret_ref.as_ref().unwrap().name,
        "on-call-url"
    );
}

#[test]
fn every_field_of_flaggers_canary_is_accepted_and_kept() {
    let canary = round_trip::<Canary>("every-field-canary.yaml");
    assert_eq!(canary.spec.provider, Some(Provider::Nginx));
    assert_eq!(canary.provider().as_str(), "nginx");
    let service = &canary.spec.service;
    assert!(service.headless);
    assert_eq!(service.traffic_distribution.as_deref(), Some("PreferClose"));
    assert_eq!(service.backend_timeout.as_deref(), Some("10s"));
    let affinity = canary.spec.analysis.session_affinity.as_ref().unwrap();
    assert_eq!(
        affinity.primary_cookie_name.as_deref(),
        Some("primary-flagger-cookie")
    );
    assert!(canary.spec.analysis.webhooks[0].disable_tls);
    assert_eq!(canary.spec.upstream_ref.as_ref().unwrap().kind, "Upstream");
}
