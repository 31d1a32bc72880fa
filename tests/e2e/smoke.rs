//! The local control plane is real: the controller-manager runs Deployments on kwok
//! nodes, the API server enforces upstream CRD schemas, and Prometheus scrapes loopback.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{DynamicObject, ListParams, Patch, PatchParams, ValidationDirective},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpListener};

use crate::harness::{Env, await_object, eventually, prometheus_query, with_namespace};

#[tokio::test]
async fn a_deployment_gets_three_ready_pods_from_the_real_controllers() {
    with_namespace("smoke-deploy", |client, ns| async move {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "podinfo"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo"}},
                    "spec": {"containers": [{"name": "podinfo", "image": "ghcr.io/stefanprodan/podinfo:6.0.0"}]}
                }
            }
        }))
        .unwrap();
        deployments
            .patch("podinfo", &PatchParams::apply("serin-e2e"), &Patch::Apply(&deployment))
            .await
            .expect("creating the Deployment");

        await_object(&deployments, "podinfo", Duration::from_secs(60), "3 ready replicas", |d| {
            let status = d.status.clone().unwrap_or_default();
            match (status.ready_replicas, status.observed_generation) {
                (Some(3), Some(g)) if Some(g) == d.metadata.generation => Ok(()),
                _ => Err(format!(
                    "readyReplicas {:?}, observedGeneration {:?}",
                    status.ready_replicas, status.observed_generation
                )),
            }
        })
        .await;

        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let pods = pods.list(&ListParams::default().labels("app=podinfo")).await.unwrap();
        assert_eq!(pods.items.len(), 3, "the replica set runs exactly 3 pods");
        for pod in &pods.items {
            let status = pod.status.clone().unwrap_or_default();
            assert_eq!(status.phase.as_deref(), Some("Running"));
            let ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            assert!(ready, "pod {:?} is Ready", pod.metadata.name);
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            assert!(node.starts_with("kwok-node-"), "scheduled on a kwok node, got {node:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_api_server_rejects_a_virtual_service_with_a_misspelled_field() {
    with_namespace("smoke-vs", |client, ns| async move {
        let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client, &ns, &ApiResource::from_gvk(&gvk));
        let misspelled = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "podinfo"},
            "spec": {
                "hosts": ["podinfo"],
                "http": [{"route": [{"destination": {"host": "podinfo-primary"}, "wieght": 100}]}]
            }
        });
        let mut strict = PatchParams::apply("serin-e2e");
        strict.field_validation = Some(ValidationDirective::Strict);
        let err = api
            .patch("podinfo", &strict, &Patch::Apply(&misspelled))
            .await
            .expect_err("the Istio CRD schema has no field `wieght`");
        let message = err.to_string();
        assert!(
            message.contains(".spec.http[0].route[0].wieght: field not declared in schema"),
            "the API server names the misspelled field, got: {message}"
        );

        // The same object with the field spelled right is accepted by the same schema.
        let mut fixed = misspelled.clone();
        fixed["spec"]["http"][0]["route"][0] =
            json!({"destination": {"host": "podinfo-primary"}, "weight": 100});
        api.patch("podinfo", &strict, &Patch::Apply(&fixed))
            .await
            .expect("a correct VirtualService is accepted");

        // A value the schema's own CEL rule forbids is rejected with the CRD's message.
        let mut bad_timeout = fixed.clone();
        bad_timeout["spec"]["http"][0]["timeout"] = json!("0s");
        let err = api
            .patch("podinfo", &strict, &Patch::Apply(&bad_timeout))
            .await
            .expect_err("Istio requires timeouts of at least 1ms");
        assert!(
            err.to_string()
                .contains("must be a valid duration greater than 1ms"),
            "the API server quotes the CRD's rule message, got: {err}"
        );
    })
    .await;
}

/// Serves one metric on loopback, registers it as a scrape target the way the traffic
/// simulator does, and sees Prometheus store the series.
#[tokio::test]
async fn prometheus_scrapes_a_loopback_target_registered_in_its_targets_dir() {
    let env = Env::get();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let marker = rand::random::<u32>();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = format!("# TYPE serin_smoke_marker gauge\nserin_smoke_marker {marker}\n");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            // Prometheus's request is small; reading it is not needed to answer.
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    let target = env
        .prometheus_targets
        .join(format!("trafficsim-smoke-{port}.json"));
    std::fs::write(
        &target,
        json!([{"targets": [format!("127.0.0.1:{port}")], "labels": {"smoke": marker.to_string()}}]).to_string(),
    )
    .unwrap();

    let query = format!(r#"serin_smoke_marker{{job="trafficsim", smoke="{marker}"}}"#);
    let value = eventually(
        "Prometheus to scrape the loopback target",
        Duration::from_secs(30),
        || async {
            let result = prometheus_query(&env, &query).await?;
            result
                .first()
                .and_then(|s| s["value"][1].as_str().map(str::to_owned))
                .ok_or_else(|| format!("no series for {query} yet"))
        },
    )
    .await;
    assert_eq!(value, marker.to_string());

    std::fs::remove_file(target).unwrap();
    server.abort();
}
