//! Bad Canaries are rejected by the API server, with a message a person understands.

use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::Value;

use serin::api::Canary;

use crate::fixture::{Rollout, canary_spec};
use crate::harness::{eventually, with_namespace};

async fn rejection(client: kube::Client, ns: &str, canary: Value) -> String {
    let gvk = GroupVersionKind::gvk("serin.dev", "v1alpha1", "Canary");
    let api: Api<DynamicObject> = Api::namespaced_with(
        client,
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "canaries"),
    );
    match api
        .patch(
            "podinfo",
            &PatchParams::apply("e2e"),
            &Patch::Apply(&canary),
        )
        .await
    {
        Ok(_) => panic!("the API server accepted an invalid Canary: {canary}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn canaries_with_invalid_specs_are_rejected_with_a_readable_message() {
    with_namespace("e2e-admission", |client, ns| async move {
        let mut zero_step = canary_spec(1);
        zero_step["spec"]["analysis"]["stepWeight"] = 0.into();
        let message = rejection(client.clone(), &ns, zero_step).await;
        println!("stepWeight 0: {message}");
        assert!(message.contains("spec.analysis.stepWeight"), "{message}");
        assert!(message.contains("greater than or equal to 1"), "{message}");

        let mut too_heavy = canary_spec(1);
        too_heavy["spec"]["analysis"]["maxWeight"] = 150.into();
        let message = rejection(client.clone(), &ns, too_heavy).await;
        println!("maxWeight 150: {message}");
        assert!(message.contains("spec.analysis.maxWeight"), "{message}");
        assert!(message.contains("less than or equal to 100"), "{message}");

        let mut unknown = canary_spec(1);
        unknown["spec"]["provider"] = "linkerd2".into();
        let message = rejection(client.clone(), &ns, unknown).await;
        println!("provider linkerd2: {message}");
        assert!(message.contains("spec.provider"), "{message}");
        assert!(
            message.contains(r#"Unsupported value: "linkerd2""#) && message.contains(r#""istio""#),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_flagger_canary_using_every_field_applies_unchanged_and_an_unrouted_provider_is_reported()
{
    with_namespace("e2e-everyfield", |client, ns| async move {
        let rollout = Rollout::start(client.clone(), &ns).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/flagger/every-field-canary.yaml"
        );
        let mut canary: Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        canary["metadata"]["namespace"] = ns.clone().into();
        let gvk = GroupVersionKind::gvk("serin.dev", "v1alpha1", "Canary");
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &ApiResource::from_gvk_with_plural(&gvk, "canaries"),
        );
        // Strict field validation, as `kubectl apply` and Flux use: an unknown field would
        // be refused with "strict decoding error: unknown field".
        let mut params = PatchParams::apply("kustomize-controller");
        params.field_validation = Some(kube::api::ValidationDirective::Strict);
        api.patch("podinfo", &params, &Patch::Apply(&canary))
            .await
            .expect("the API server accepts every field of Flagger's Canary");
        let stored = api.get("podinfo").await.unwrap();
        assert_eq!(
            stored.data["spec"]["analysis"]["sessionAffinity"]["sameSite"], "Lax",
            "the fields are stored, not pruned"
        );
        assert_eq!(stored.data["spec"]["service"]["headless"], true);

        let canaries: Api<Canary> = Api::namespaced(client, &ns);
        let message = eventually(
            "the unsupported provider reported",
            std::time::Duration::from_secs(30),
            || async {
                let c = canaries.get("podinfo").await.map_err(|e| e.to_string())?;
                let status = c.status.unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .cloned();
                match (status.message, ready) {
                    (Some(m), Some(r)) if r.reason == "InvalidSpec" && r.status == "False" => Ok(m),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        assert!(
            message.contains("provider nginx is not supported"),
            "{message}"
        );
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(rollout.client.clone(), &ns);
        assert!(
            deployments
                .get_opt("podinfo-primary")
                .await
                .unwrap()
                .is_none(),
            "nothing was created"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

/// Applies `object` (a Canary or a MetricTemplate) and returns the API server's refusal.
async fn refusal(client: kube::Client, ns: &str, object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap();
    let plural = if kind == "Canary" {
        "canaries"
    } else {
        "metrictemplates"
    };
    let gvk = GroupVersionKind::gvk("serin.dev", "v1alpha1", kind);
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, ns, &ApiResource::from_gvk_with_plural(&gvk, plural));
    let name = object["metadata"]["name"].as_str().unwrap();
    match api
        .patch(name, &PatchParams::apply("e2e"), &Patch::Apply(object))
        .await
    {
        Ok(_) => panic!("the API server accepted an invalid {kind}: {object}"),
        Err(kube::Error::Api(status)) => status.message,
        Err(e) => e.to_string(),
    }
}

/// The table of docs/api.md ("Bad input"): each malformed Canary or MetricTemplate, and
/// the field and words its refusal names.
#[tokio::test]
async fn malformed_canaries_and_metric_templates_are_refused_naming_the_field() {
    with_namespace("e2e-malformed", |client, ns| async move {
        let canary = |edit: &dyn Fn(&mut Value)| {
            let mut c = canary_spec(2);
            edit(&mut c);
            c
        };
        let template = |spec: Value| {
            serde_json::json!({
                "apiVersion": "serin.dev/v1alpha1", "kind": "MetricTemplate",
                "metadata": {"name": "latency"}, "spec": spec
            })
        };
        use serde_json::json;
        let cases: Vec<(&str, Value, &[&str])> = vec![
            (
                "an interval that is not a duration",
                canary(&|c| c["spec"]["analysis"]["interval"] = json!("5x")),
                &["spec.analysis.interval", "must be a duration such as"],
            ),
            (
                "threshold 0",
                canary(&|c| c["spec"]["analysis"]["threshold"] = json!(0)),
                &["spec.analysis.threshold", "greater than or equal to 1"],
            ),
            (
                "no targetRef",
                canary(&|c| {
                    c["spec"].as_object_mut().unwrap().remove("targetRef");
                }),
                &["spec.targetRef", "Required value"],
            ),
            (
                "a target that is not a Deployment",
                canary(&|c| c["spec"]["targetRef"]["kind"] = json!("Pod")),
                &["spec.targetRef.kind", "supported values: \"Deployment\""],
            ),
            (
                "service port 0",
                canary(&|c| c["spec"]["service"]["port"] = json!(0)),
                &["spec.service.port", "greater than or equal to 1"],
            ),
            (
                "a step weight above 100",
                canary(&|c| c["spec"]["analysis"]["stepWeights"] = json!([10, 200])),
                &["spec.analysis.stepWeights[1]", "less than or equal to 100"],
            ),
            (
                "a metric without a name",
                canary(&|c| {
                    c["spec"]["analysis"]["metrics"] = json!([{"thresholdRange": {"min": 99}}])
                }),
                &["spec.analysis.metrics[0].name", "Required value"],
            ),
            (
                "a metric interval that is not a duration",
                canary(&|c| {
                    c["spec"]["analysis"]["metrics"] =
                        json!([{"name": "request-success-rate", "interval": "fast"}])
                }),
                &["spec.analysis.metrics[0].interval", "must be a duration"],
            ),
            (
                "a misspelled webhook type",
                canary(&|c| {
                    c["spec"]["analysis"]["webhooks"] =
                        json!([{"name": "acceptance", "type": "pre-rolout", "url": "http://x"}])
                }),
                &["spec.analysis.webhooks[0].type", "\"pre-rollout\""],
            ),
            (
                "a webhook without a url",
                canary(&|c| {
                    c["spec"]["analysis"]["webhooks"] =
                        json!([{"name": "acceptance", "type": "pre-rollout"}])
                }),
                &["spec.analysis.webhooks[0].url", "Required value"],
            ),
            (
                "a conformance test run at an unknown time",
                canary(&|c| {
                    c["spec"]["analysis"]["conformanceTests"] = json!([{
                        "name": "smoke", "when": ["sometimes"],
                        "template": {"template": {"spec": {"containers": [{"name": "c", "image": "curl"}]}}}
                    }])
                }),
                &["spec.analysis.conformanceTests[0].when[0]", "\"each-step\""],
            ),
            (
                "an alert severity Flagger does not have",
                canary(&|c| {
                    c["spec"]["analysis"]["alerts"] =
                        json!([{"name": "on-call", "severity": "critical", "providerRef": {"name": "slack"}}])
                }),
                &["spec.analysis.alerts[0].severity", "\"warn\""],
            ),
            (
                "a misspelled field",
                canary(&|c| c["spec"]["analysis"]["stepWieght"] = json!(10)),
                &[".spec.analysis.stepWieght", "field not declared in schema"],
            ),
            (
                "a MetricTemplate provider serin does not query",
                template(json!({"provider": {"type": "graphite", "address": "http://g"}, "query": "x"})),
                &["spec.provider.type", "supported values: \"prometheus\""],
            ),
            (
                "a MetricTemplate without a query",
                template(json!({"provider": {"type": "prometheus", "address": "http://p"}})),
                &["spec.query", "Required value"],
            ),
        ];
        for (case, object, words) in cases {
            let message = refusal(client.clone(), &ns, &object).await;
            println!("| {case} | {message} |");
            for word in words {
                assert!(message.contains(word), "{case}: {message:?} does not say {word:?}");
            }
        }
    })
    .await;
}
