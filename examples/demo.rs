//! The demo driver run by `make demo` (scripts/demo.sh), against the local control
//! plane with serin and the traffic simulator already running: it deploys podinfo with
//! a Canary, releases a good version (promoted) and a bad one (rolled back), and prints
//! the progress as it happens: phase, weight, failed checks and the canary's metrics.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use serin::api::{Canary, CanaryPhase};

const NS: &str = "demo";
const MANAGER: &str = "kustomize-controller";

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

async fn apply(client: &Client, object: &Value) -> anyhow::Result<()> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = if kind == "Canary" {
        "canaries".to_string()
    } else {
        format!("{}s", kind.to_lowercase())
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// The canary's success rate and p99 latency over the last 10s, as Prometheus sees them.
async fn canary_metrics(prometheus: &str) -> (Option<f64>, Option<f64>) {
    let query = |q: String| async move {
        let body: Value = reqwest::Client::new()
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["data"]["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    };
    let selector = format!(
        r#"reporter="destination",destination_workload_namespace="{NS}",destination_workload="podinfo""#
    );
    let success = query(format!(
        r#"sum(rate(istio_requests_total{{{selector},response_code!~"5.*"}}[10s])) / sum(rate(istio_requests_total{{{selector}}}[10s])) * 100"#
    ))
    .await;
    let p99 = query(format!(
        r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{selector}}}[10s])) by (le))"#
    ))
    .await;
    (success, p99)
}

/// Prints the rollout as it happens until it settles in `until`s phases.
async fn follow(client: &Client, prometheus: &str, release: &str) -> anyhow::Result<CanaryPhase> {
    let canaries: Api<Canary> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    let mut last = String::new();
    let mut left_settled = false;
    loop {
        let status = canaries.get("podinfo").await?.status.unwrap_or_default();
        let settled = matches!(status.phase, CanaryPhase::Succeeded | CanaryPhase::Failed);
        left_settled |= !settled;
        let line = format!(
            "{:<12} weight {:>3}%  failed checks {}",
            status.phase.as_str(),
            status.canary_weight,
            status.failed_checks
        );
        if line != last {
            let (success, p99) = if status.canary_weight > 0 {
                canary_metrics(prometheus).await
            } else {
                (None, None)
            };
            let metrics = match (success, p99) {
                (Some(s), Some(p)) => format!("  canary: success {s:5.1}%  p99 {p:4.0} ms"),
                _ => String::new(),
            };
            println!(
                "  [{:5.1}s] {release}  {line}{metrics}",
                started.elapsed().as_secs_f64()
            );
            if let Some(message) = status
                .message
                .as_deref()
                .filter(|_| settled && left_settled)
            {
                println!("           {message}");
            }
            last = line;
        }
        if settled && left_settled {
            return Ok(status.phase);
        }
        if started.elapsed() > Duration::from_secs(180) {
            anyhow::bail!("the rollout did not settle within 3 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn release(
    client: &Client,
    prometheus: &str,
    deployment: &mut Value,
    tag: &str,
    error_rate: &str,
) -> anyhow::Result<CanaryPhase> {
    println!("\n==> releasing podinfo {tag} (simulated error rate {error_rate})");
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(format!("ghcr.io/stefanprodan/podinfo:{tag}"));
    deployment["spec"]["template"]["metadata"]["annotations"]["sim.serin.dev/error-rate"] =
        json!(error_rate);
    apply(client, deployment).await?;
    follow(client, prometheus, tag).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await?;
    let prometheus = std::env::var("SERIN_PROMETHEUS_URL")?;
    let mut deployment = yaml("examples/podinfo/deployment.yaml");
    let canary = yaml("examples/podinfo/canary.yaml");

    println!("==> deploying podinfo 6.0.0 with a Canary (examples/podinfo/)");
    apply(&client, &deployment).await?;
    apply(&client, &canary).await?;
    let canaries: Api<Canary> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    loop {
        let phase = canaries
            .get("podinfo")
            .await?
            .status
            .unwrap_or_default()
            .phase;
        if phase == CanaryPhase::Initialized {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the Canary did not initialize"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let primary = deployments.get("podinfo-primary").await?;
    println!(
        "  initialized in {:.1}s: podinfo-primary serves 100% with {} ready replicas",
        started.elapsed().as_secs_f64(),
        primary.status.and_then(|s| s.ready_replicas).unwrap_or(0)
    );

    let good = release(&client, &prometheus, &mut deployment, "6.0.1", "0.001").await?;
    let bad = release(&client, &prometheus, &mut deployment, "6.0.2", "0.2").await?;

    let primary = deployments.get("podinfo-primary").await?;
    let image = primary
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone().unwrap_or_default());
    println!("\n==> summary");
    println!("  6.0.1 (healthy):      {good}");
    println!("  6.0.2 (20% errors):   {bad}");
    println!("  the primary runs {}", image.unwrap_or_default());
    anyhow::ensure!(
        good == CanaryPhase::Succeeded && bad == CanaryPhase::Failed,
        "unexpected outcome"
    );
    Ok(())
}
