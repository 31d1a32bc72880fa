//! A whole release of an application on one control plane: a frontend and a backend
//! released by canary through Istio, a cache and a database released by blue/green without
//! a mesh. Their Deployments and Canaries are applied together in one server-side apply,
//! as Flux's kustomize-controller applies a kustomization, and so is the next release of
//! all four. Each reaches the outcome its metrics call for: the healthy ones are promoted,
//! the erroring ones rolled back, and no user request reaches an unready backend.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::{Value, json};
use serin::api::{Canary, CanaryPhase};

use crate::fixture::{IMAGE, Rollout, canary_spec, podinfo};
use crate::harness::{eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(150);

/// The podinfo Deployment renamed to `name`.
fn app(name: &str, tag: &str, error_rate: f64) -> Value {
    let mut d = podinfo(tag, error_rate, 40.0, None);
    d["metadata"]["name"] = json!(name);
    d["metadata"]["labels"]["app"] = json!(name);
    d["spec"]["selector"]["matchLabels"]["app"] = json!(name);
    d["spec"]["template"]["metadata"]["labels"]["app"] = json!(name);
    d
}

/// A weighted canary through Istio (steps of 10 up to 50), or blue/green with
/// `provider: kubernetes` (3 iterations), for the Deployment `name`.
fn canary(name: &str, blue_green: bool) -> Value {
    let mut c = canary_spec(2);
    c["metadata"]["name"] = json!(name);
    c["spec"]["targetRef"]["name"] = json!(name);
    if blue_green {
        c["spec"]["provider"] = json!("kubernetes");
        let analysis = c["spec"]["analysis"].as_object_mut().unwrap();
        analysis.remove("stepWeight");
        analysis.remove("maxWeight");
        analysis.insert("iterations".into(), json!(3));
    }
    c
}

const APPS: [(&str, bool); 4] = [
    ("frontend", false),
    ("backend", false),
    ("cache", true),
    ("database", true),
];

/// One `kubectl apply --server-side` of every object, by kustomize-controller.
async fn apply_all(ns: &str, objects: Vec<Value>) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string();
    let mut child = tokio::process::Command::new("kubectl")
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "kustomize-controller",
            "-n",
            ns,
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on PATH");
    use tokio::io::AsyncWriteExt;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

async fn phases(client: &kube::Client, ns: &str) -> Vec<(String, CanaryPhase)> {
    let canaries: Api<Canary> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for (name, _) in APPS {
        let phase = canaries
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status)
            .map(|s| s.phase)
            .unwrap_or_default();
        out.push((name.to_string(), phase));
    }
    out
}

async fn await_phases(client: &kube::Client, ns: &str, want: &[(&str, CanaryPhase)], what: &str) {
    eventually(what, SETTLE, || async {
        let seen = phases(client, ns).await;
        let matches = want
            .iter()
            .all(|(name, phase)| seen.iter().any(|(n, p)| n == name && p == phase));
        if matches {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn four_applications_released_in_one_apply_each_reach_the_outcome_their_metrics_call_for() {
    with_namespace("e2e-release", |client, ns| async move {
        let rollout = Rollout::start_with_rps(client.clone(), &ns, 200).await;
        let initial: Vec<Value> = APPS
            .iter()
            .flat_map(|(name, blue_green)| [app(name, "6.0.0", 0.001), canary(name, *blue_green)])
            .collect();
        apply_all(&ns, initial).await;
        await_phases(
            &client,
            &ns,
            &APPS.map(|(n, _)| (n, CanaryPhase::Initialized)),
            "all four initialised",
        )
        .await;

        // The next release of all four, in one apply: the frontend and the cache are
        // healthy, the backend and the database answer 20% errors.
        let release: Vec<Value> = [
            ("frontend", 0.001),
            ("backend", 0.2),
            ("cache", 0.001),
            ("database", 0.2),
        ]
        .iter()
        .map(|(name, errors)| app(name, "6.0.1", *errors))
        .collect();
        apply_all(&ns, release).await;
        let outcome = [
            ("frontend", CanaryPhase::Succeeded),
            ("backend", CanaryPhase::Failed),
            ("cache", CanaryPhase::Succeeded),
            ("database", CanaryPhase::Failed),
        ];
        await_phases(&client, &ns, &outcome, "each release's outcome").await;
        println!(
            "outcomes after {:?}: {:?}",
            rollout.elapsed(),
            phases(&client, &ns).await
        );

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        for (name, phase) in outcome {
            let primary = deployments.get(&format!("{name}-primary")).await.unwrap();
            let want = if phase == CanaryPhase::Succeeded {
                "6.0.1"
            } else {
                "6.0.0"
            };
            assert_eq!(
                Rollout::image(&primary),
                format!("{IMAGE}:{want}"),
                "{name}-primary runs {want} after {phase}"
            );
        }
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
