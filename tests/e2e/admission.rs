//! Bad Canaries are rejected by the API server, with a message a person understands.

use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::Value;

use crate::fixture::canary_spec;
use crate::harness::with_namespace;

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
        unknown["spec"]["provider"] = "nginx".into();
        let message = rejection(client.clone(), &ns, unknown).await;
        println!("provider nginx: {message}");
        assert!(message.contains("spec.provider"), "{message}");
        assert!(
            message.contains(r#"Unsupported value: "nginx""#) && message.contains(r#""istio""#),
            "{message}"
        );
    })
    .await;
}
