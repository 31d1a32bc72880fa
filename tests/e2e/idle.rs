//! An idle controller leaves the API server alone: three Canaries promoted to Succeeded
//! (two through Istio, one blue/green without a mesh), each reconciled every second,
//! then a quiet window in which the API server's audit log shows no request from serin
//! other than its watches and the renewals of its leader Lease. Also prints the write
//! requests one healthy release costs, counted by the API server, and checks that the
//! MetricTemplate one of them refers to is read from serin's cache, not requested at
//! every analysis tick.
//!
//! Needs the audit log: start the control plane with `SERIN_E2E_AUDIT_LOG=1
//! tests/e2e/cluster.sh up` (scripts/test.sh does).

use std::{
    collections::BTreeMap,
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
    time::Duration,
};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::{Value, json};
use serin::api::{Canary, CanaryPhase};

use crate::fixture::{IMAGE, Rollout, canary_spec, podinfo};
use crate::harness::{eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(180);
/// The quiet window: twenty reconciles of each Canary (interval 1s).
const QUIET: Duration = Duration::from_secs(25);

const APPS: [(&str, bool); 3] = [("web", false), ("api", false), ("store", true)];

fn app(name: &str, tag: &str) -> Value {
    let mut d = podinfo(tag, 0.001, 40.0, None);
    d["metadata"]["name"] = json!(name);
    d["metadata"]["labels"]["app"] = json!(name);
    d["spec"]["selector"]["matchLabels"]["app"] = json!(name);
    d["spec"]["template"]["metadata"]["labels"]["app"] = json!(name);
    d
}

/// Flagger's Istio error-rate template (without an address: serin's metrics server).
fn error_rate_template() -> Value {
    json!({
        "apiVersion": "serin.dev/v1alpha1", "kind": "MetricTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {
            "provider": {"type": "prometheus"},
            "query": r#"100 - sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ target }}"}[{{ interval }}])) * 100"#
        }
    })
}

fn canary(name: &str, blue_green: bool) -> Value {
    let mut c = canary_spec(2);
    c["metadata"]["name"] = json!(name);
    c["spec"]["targetRef"]["name"] = json!(name);
    if name == "api" {
        c["spec"]["analysis"]["metrics"] = json!([
            {"name": "error-rate", "templateRef": {"name": "error-rate"}, "thresholdRange": {"max": 1}, "interval": "5s"},
            {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "5s"}
        ]);
    }
    if blue_green {
        c["spec"]["provider"] = json!("kubernetes");
        let analysis = c["spec"]["analysis"].as_object_mut().unwrap();
        analysis.remove("stepWeight");
        analysis.remove("maxWeight");
        analysis.insert("iterations".into(), json!(3));
    }
    c
}

/// The API server's audit log, read from where the last read stopped.
struct Audit {
    path: PathBuf,
    offset: u64,
}

/// One request, as the audit log records it.
#[derive(Debug)]
struct Request {
    verb: String,
    resource: String,
    name: String,
}

impl Audit {
    fn open() -> Audit {
        let path: PathBuf = std::env::var("SERIN_E2E_AUDIT_LOG")
            .expect(
                "SERIN_E2E_AUDIT_LOG is not set: start the control plane with \
                 `SERIN_E2E_AUDIT_LOG=1 tests/e2e/cluster.sh up` so that the API server \
                 keeps an audit log",
            )
            .into();
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Audit { path, offset }
    }

    /// The requests serin (User-Agent `serin/...`) made in `ns` since the last call.
    fn serin_requests(&mut self, ns: &str) -> Vec<Request> {
        let mut file = std::fs::File::open(&self.path).expect("the audit log");
        file.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        // Only whole lines; a partly written last line is read next time.
        let complete = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
        self.offset += complete as u64;
        text[..complete]
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|e| e["stage"] == "ResponseComplete")
            .filter(|e| {
                e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("serin/"))
            })
            .filter(|e| e["objectRef"]["namespace"] == ns)
            .map(|e| Request {
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                resource: e["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: e["objectRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            })
            .collect()
    }
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

fn by_verb_and_resource(requests: &[&Request]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in requests {
        *counts
            .entry(format!("{} {}", r.verb, r.resource))
            .or_default() += 1;
    }
    counts
}

async fn await_phase(client: &kube::Client, ns: &str, phase: CanaryPhase, what: &str) {
    let canaries: Api<Canary> = Api::namespaced(client.clone(), ns);
    eventually(what, SETTLE, || async {
        let mut seen = Vec::new();
        for (name, _) in APPS {
            let p = canaries
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status)
                .map(|s| s.phase)
                .unwrap_or_default();
            seen.push((name, p));
        }
        assert!(
            seen.iter().all(|(_, p)| *p != CanaryPhase::Failed),
            "a healthy release failed: {seen:?}"
        );
        if seen.iter().all(|(_, p)| *p == phase) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn canaries_in_succeeded_send_the_api_server_nothing_but_lease_renewals() {
    with_namespace("e2e-idle", |client, ns| async move {
        let mut audit = Audit::open();
        let rollout = Rollout::start(client.clone(), &ns).await;
        rollout.apply("flux", &error_rate_template()).await;
        for (name, blue_green) in APPS {
            rollout.apply("flux", &app(name, "6.0.0")).await;
            rollout.apply("flux", &canary(name, blue_green)).await;
        }
        await_phase(&client, &ns, CanaryPhase::Initialized, "all initialised").await;
        // Let what the initialisation implies (routes, scale-down) be written.
        tokio::time::sleep(Duration::from_secs(5)).await;
        audit.serin_requests(&ns);

        for (name, _) in APPS {
            rollout.apply("flux", &app(name, "6.0.1")).await;
        }
        await_phase(&client, &ns, CanaryPhase::Succeeded, "all promoted").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let release = audit.serin_requests(&ns);
        let writes: Vec<&Request> = release
            .iter()
            .filter(|r| is_write(&r.verb) && r.resource != "leases")
            .collect();
        println!(
            "write requests per healthy release: {:.1} ({} for {} canaries): {:?}",
            writes.len() as f64 / APPS.len() as f64,
            writes.len(),
            APPS.len(),
            by_verb_and_resource(&writes)
        );
        let template_reads = release
            .iter()
            .filter(|r| r.resource == "metrictemplates" && r.verb != "watch")
            .count();
        assert_eq!(
            template_reads,
            0,
            "the MetricTemplate was requested during the release instead of read from the cache: {:?}",
            by_verb_and_resource(&release.iter().collect::<Vec<_>>())
        );

        // The quiet window: every Canary reconciles every second, and none writes or
        // reads anything but through its watches.
        tokio::time::sleep(QUIET).await;
        let idle = audit.serin_requests(&ns);
        let leases = idle.iter().filter(|r| r.resource == "leases").count();
        let others: Vec<&Request> = idle
            .iter()
            .filter(|r| r.resource != "leases" && r.verb != "watch")
            .collect();
        println!(
            "requests in {QUIET:?} with {} Canaries in Succeeded: {} lease, {} other: {:?}",
            APPS.len(),
            leases,
            others.len(),
            by_verb_and_resource(&others)
        );
        assert!(
            others.is_empty(),
            "serin sent requests while idle: {:?}; controller log:\n{}",
            others
                .iter()
                .map(|r| format!("{} {} {}", r.verb, r.resource, r.name))
                .collect::<Vec<_>>(),
            rollout.controller_log()
        );
        assert!(
            leases > 0,
            "no Lease renewal in the audit log: is the log attributing serin's requests?"
        );

        // Nothing promoted that the metrics called bad: every release was healthy and
        // every primary now runs it.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        for (name, _) in APPS {
            let primary = deployments.get(&format!("{name}-primary")).await.unwrap();
            assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
        }
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
