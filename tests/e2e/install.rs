//! Installing serin from `deploy/`: the API server accepts the kustomize base and every
//! overlay, and the controller, run with the token of the ServiceAccount the base
//! creates (so the API server enforces its RBAC), carries a release to the end.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Process, Rollout, canary_spec};
use crate::harness::{Env, with_namespace};

const SETTLE: Duration = Duration::from_secs(90);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `kubectl args`, with `input` on stdin; panics with its stderr on failure.
fn kubectl(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (source the cluster's env file)");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn render(dir: &str) -> String {
    kubectl(&["kustomize", repo().join(dir).to_str().unwrap()], None)
}

/// `kubectl apply --server-side` of `manifests`, for real or as a server-side dry run.
fn apply(manifests: &str, dry_run: bool) -> String {
    let mut args = vec![
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "e2e-install",
    ];
    if dry_run {
        args.push("--dry-run=server");
    }
    args.extend(["-f", "-"]);
    kubectl(&args, Some(manifests))
}

/// The base with a component of `deploy/components/` added, as a user's overlay does.
fn render_with_component(component: &str) -> String {
    let dir = std::env::temp_dir().join(format!("serin-{component}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // kustomize refuses absolute paths: reach the repository from the temporary directory.
    let up = "../".repeat(dir.components().count() - 1);
    let repo = repo().to_str().unwrap().trim_start_matches('/');
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources: [{up}{repo}/deploy/base]\ncomponents: [{up}{repo}/deploy/components/{component}]\n"
        ),
    )
    .unwrap();
    let rendered = kubectl(&["kustomize", dir.to_str().unwrap()], None);
    let _ = std::fs::remove_dir_all(&dir);
    rendered
}

fn install_base() {
    apply(&render("deploy/base"), false);
}

#[tokio::test]
async fn the_api_server_accepts_the_kustomize_base_and_every_overlay() {
    install_base();
    kubectl(
        &[
            "create",
            "namespace",
            "apps",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    );
    let _ = std::process::Command::new("kubectl")
        .args(["create", "namespace", "apps"])
        .output();
    for dir in [
        "deploy/base",
        "deploy/overlays/istio",
        "deploy/overlays/linkerd",
        "deploy/overlays/gatewayapi",
        "deploy/overlays/namespaced",
    ] {
        let manifests = render(dir);
        let out = apply(&manifests, true);
        println!("{dir}: {} objects accepted", out.lines().count());
        assert!(out.contains("deployment.apps/serin"), "{dir}: {out}");
        for doc in serde_yaml::Deserializer::from_str(&manifests) {
            use serde::Deserialize;
            let object = serde_json::Value::deserialize(doc).unwrap();
            for rule in object["rules"].as_array().into_iter().flatten() {
                for field in ["apiGroups", "resources", "verbs"] {
                    assert!(
                        !rule[field].as_array().unwrap().iter().any(|v| v == "*"),
                        "{dir}: a wildcard in {field} of {}",
                        object["metadata"]["name"]
                    );
                }
            }
        }
    }
    let namespaced = render("deploy/overlays/namespaced");
    assert!(namespaced.contains("kind: Role\n") && !namespaced.contains("kind: ClusterRole\n"));
    assert!(namespaced.contains("--namespace=apps"));
}

#[tokio::test]
async fn the_controller_with_the_service_accounts_token_carries_a_release_to_the_end() {
    with_namespace("e2e-rbac", |client, ns| async move {
        install_base();
        let token = kubectl(
            &[
                "create",
                "token",
                "serin",
                "--namespace",
                "serin-system",
                "--duration",
                "1h",
            ],
            None,
        );
        let kubeconfig = kubeconfig_for(&format!("serin-{ns}"), &token);
        let rollout = Rollout::start_without_controller(client, &ns, 100);
        let serin = spawn_serin(&kubeconfig, &ns);

        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &canary_spec(2)).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.1")
        );
        let text = std::fs::read_to_string(&serin.log).unwrap_or_default();
        assert!(
            !text.contains("forbidden") && !text.contains("Forbidden"),
            "no request was refused:\n{text}"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

/// A kubeconfig for the local API server that authenticates with `token`.
fn kubeconfig_for(name: &str, token: &str) -> std::path::PathBuf {
    let server = kubectl(
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
        None,
    );
    // The CA as a file or inline, whichever the admin kubeconfig uses.
    let ca_file = kubectl(
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority}",
        ],
        None,
    );
    let ca = if ca_file.is_empty() {
        let data = kubectl(
            &[
                "config",
                "view",
                "--minify",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.certificate-authority-data}",
            ],
            None,
        );
        format!("certificate-authority-data: {data}")
    } else {
        format!("certificate-authority: {ca_file}")
    };
    let env = Env::get();
    let kubeconfig = env.dir.join(format!("kubeconfig-{name}"));
    std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    {ca}\nusers:\n- name: serin\n  user:\n    token: {}\ncontexts:\n- name: serin\n  context: {{cluster: local, user: serin}}\ncurrent-context: serin\n",
                token.trim()
            ),
        )
        .unwrap();

    kubeconfig
}

/// `serin run` for `ns` as the user of `kubeconfig`, its leader Lease in serin-system.
fn spawn_serin(kubeconfig: &Path, ns: &str) -> Process {
    let env = Env::get();
    let log = env.dir.join("logs").join(format!("serin-sa-{ns}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let lease = format!("serin-{ns}");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_serin"))
        .args([
            "run",
            "--namespace",
            ns,
            "--metrics-server",
            &env.prometheus_url,
            "--listen",
            "127.0.0.1:0",
            "--leader-elect-namespace",
            "serin-system",
            "--leader-elect-name",
            &lease,
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Process { child, log }
}

/// The rules of the base's ClusterRole and leader Role, as (kind, index, resources).
fn rules() -> Vec<(String, usize, Vec<String>)> {
    let mut out = Vec::new();
    for doc in render("deploy/base").split("\n---\n") {
        let value: serde_json::Value = serde_yaml::from_str(doc).unwrap();
        let kind = value["kind"].as_str().unwrap_or_default();
        if kind == "ClusterRole" || kind == "Role" {
            for (i, rule) in value["rules"].as_array().unwrap().iter().enumerate() {
                let resources = rule["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect();
                out.push((kind.to_string(), i, resources));
            }
        }
    }
    out
}

/// The base's roles bound to a new ServiceAccount `name`, without rule `skip` of `kind`.
fn install_without(name: &str, kind: &str, skip: usize) -> String {
    let mut objects = Vec::new();
    for doc in render("deploy/base").split("\n---\n") {
        let mut value: serde_json::Value = serde_yaml::from_str(doc).unwrap();
        let k = value["kind"].as_str().unwrap_or_default().to_string();
        match k.as_str() {
            "ClusterRole" | "Role" => {
                if k == kind {
                    value["rules"].as_array_mut().unwrap().remove(skip);
                }
                value["metadata"]["name"] = format!("{name}-{}", k.to_lowercase()).into();
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                let role_kind = if k == "ClusterRoleBinding" {
                    "ClusterRole"
                } else {
                    "Role"
                };
                value["metadata"]["name"] = format!("{name}-{}", k.to_lowercase()).into();
                value["roleRef"]["name"] = format!("{name}-{}", role_kind.to_lowercase()).into();
                value["subjects"][0]["name"] = name.into();
                value["subjects"][0]["namespace"] = "serin-system".into();
            }
            "ServiceAccount" => value["metadata"]["name"] = name.into(),
            _ => continue,
        }
        objects.push(serde_json::to_string(&value).unwrap());
    }
    apply(&objects.join("\n---\n"), false);
    kubectl(
        &[
            "create",
            "token",
            name,
            "--namespace",
            "serin-system",
            "--duration",
            "1h",
        ],
        None,
    )
}

/// A release that touches every kind of object serin reads or writes: a tracked
/// ConfigMap, an autoscaler, a MetricTemplate, events, the status and the leader Lease.
async fn full_scenario(rollout: &Rollout, provider: &str, failing_test: bool) {
    rollout
        .apply(
            "kustomize-controller",
            &serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "podinfo-config"}, "data": {"color": "blue"}}),
        )
        .await;
    rollout
        .apply(
            "kustomize-controller",
            &crate::fixture::podinfo("6.0.0", 0.001, 40.0, Some("podinfo-config")),
        )
        .await;
    rollout
        .apply(
            "kustomize-controller",
            &serde_json::json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "podinfo"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "minReplicas": 2, "maxReplicas": 4,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
                }
            }),
        )
        .await;
    rollout
        .apply(
            "kustomize-controller",
            &serde_json::json!({
                "apiVersion": "serin.dev/v1alpha1", "kind": "MetricTemplate",
                "metadata": {"name": "success"},
                "spec": {
                    "provider": {"type": "prometheus", "address": rollout.env.prometheus_url},
                    "query": "sum(rate(istio_requests_total{destination_workload_namespace=\"{{ namespace }}\",destination_workload=\"{{ target }}\",response_code!~\"5.*\"}[{{ interval }}])) / sum(rate(istio_requests_total{destination_workload_namespace=\"{{ namespace }}\",destination_workload=\"{{ target }}\"}[{{ interval }}])) * 100"
                }
            }),
        )
        .await;
    // An alert whose receiver is not listening: serin reads its AlertProvider (and
    // fails to deliver, which is not a permission problem).
    rollout
        .apply(
            "kustomize-controller",
            &serde_json::json!({
                "apiVersion": "serin.dev/v1alpha1", "kind": "AlertProvider",
                "metadata": {"name": "on-call"},
                "spec": {"type": "generic", "address": "http://127.0.0.1:9/hook"}
            }),
        )
        .await;
    let mut spec = canary_spec(5);
    spec["spec"]["provider"] = provider.into();
    spec["spec"]["analysis"]["alerts"] = serde_json::json!([
        {"name": "on-call", "severity": "info", "providerRef": {"name": "on-call"}}
    ]);
    spec["spec"]["autoscalerRef"] = serde_json::json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"});
    spec["spec"]["analysis"]["metrics"] = serde_json::json!([
        {"name": "success", "templateRef": {"name": "success"}, "thresholdRange": {"min": 90}, "interval": "5s"}
    ]);
    // A conformance test: kwok completes its pod after a second, or fails it with a
    // termination message (the stages in tests/e2e/kwok-stages.yaml).
    let mut annotations = serde_json::json!({"pod-complete.stage.kwok.x-k8s.io/delay": "1s"});
    if failing_test {
        annotations["serin.dev/e2e-fail"] = "503".into();
    }
    spec["spec"]["analysis"]["conformanceTests"] = serde_json::json!([{
        "name": "smoke", "timeout": "2m",
        "template": {"template": {
            "metadata": {"annotations": annotations},
            "spec": {"containers": [{"name": "smoke", "image": "curlimages/curl", "args": ["-fsS", "$(SERIN_CANARY_ADDRESS)/healthz"]}]}
        }}
    }]);
    rollout.apply("kustomize-controller", &spec).await;
}

#[tokio::test]
async fn removing_any_single_rule_makes_serin_fail_with_a_forbidden_error_naming_the_resource() {
    install_base();
    let variants = rules();
    assert!(variants.len() >= 10, "{variants:?}");
    let runs = variants.iter().enumerate().map(|(n, (kind, i, resources))| async move {
        let name = format!("serin-without-{n}");
        let token = install_without(&name, kind, *i);
        let kubeconfig = kubeconfig_for(&name, &token);
        let mut evidence = String::new();
        with_namespace(&format!("e2e-rbac-minus{n}"), |client, ns| {
            let evidence = &mut evidence;
            async move {
                let rollout = Rollout::start_without_controller(client, &ns, 100);
                // The Gateway API rule is only used by the gatewayapi and linkerd providers.
                let provider = if resources.iter().any(|r| r == "httproutes") {
                    "linkerd"
                } else {
                    "istio"
                };
                // The pods rule is used to read a failed test's termination message.
                let failing_test = resources.iter().any(|r| r == "pods");
                full_scenario(&rollout, provider, failing_test).await;
                let serin = spawn_serin(&kubeconfig, &ns);
                let refused = |text: &str| {
                    text.lines()
                        .find(|l| {
                            l.contains("forbidden")
                                && resources
                                    .iter()
                                    .any(|r| l.contains(&format!("resource \"{r}\"")))
                        })
                        .map(str::to_string)
                };
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                let mut released = false;
                loop {
                    let text = std::fs::read_to_string(&serin.log).unwrap_or_default();
                    if let Some(line) = refused(&text) {
                        *evidence = line;
                        break;
                    }
                    let phase = rollout.canary().await.status.unwrap_or_default().phase;
                    if !released && phase == CanaryPhase::Initialized {
                        rollout
                            .apply_app_with_config("6.0.1", "podinfo-config")
                            .await;
                        released = true;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "without rule {i} of the {kind} ({resources:?}) nothing was refused; phase {phase}; log:\n{text}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                rollout.assert_no_request_reached_an_unready_backend().await;
            }
        })
        .await;
        (kind.clone(), resources.clone(), evidence)
    });
    for (kind, resources, evidence) in futures::future::join_all(runs).await {
        let cut = evidence.find("is forbidden").unwrap_or(0);
        println!(
            "without {kind} {resources:?}: {}",
            &evidence[cut..evidence.len().min(cut + 160)]
        );
    }
}

/// The objects of a multi-document YAML stream, keyed by kind and name, without their
/// labels (the chart adds Helm's own) and without the Namespace (Helm's
/// `--create-namespace` makes it).
fn objects(yaml: &str) -> std::collections::BTreeMap<(String, String), serde_json::Value> {
    use serde::Deserialize;
    let mut out = std::collections::BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let mut value = serde_json::Value::deserialize(doc).unwrap();
        if value.is_null() || value["kind"] == "Namespace" {
            continue;
        }
        if let Some(meta) = value["metadata"].as_object_mut() {
            meta.remove("labels");
        }
        let value = numbers_by_value(&value);
        let key = (
            value["kind"].as_str().unwrap().to_string(),
            value["metadata"]["name"].as_str().unwrap().to_string(),
        );
        out.insert(key, value);
    }
    out
}

/// YAML writers differ on `100` and `100.0` (kustomize rewrites the CRDs' floats as
/// integers); compare numbers by value.
fn numbers_by_value(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap_or_default()),
        Value::Array(items) => Value::Array(items.iter().map(numbers_by_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_by_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn helm_template(set: &[&str]) -> String {
    let out = std::process::Command::new("helm")
        .args(["template", "serin"])
        .arg(repo().join("deploy/chart"))
        .args(["--namespace", "serin-system", "--include-crds"])
        .args(set)
        .output()
        .expect("helm on PATH (tests/e2e/build-bins.sh builds it)");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_helm_chart_renders_what_the_kustomize_base_and_overlays_do() {
    for (set, dir) in [
        (vec![], "deploy/base"),
        (
            vec!["--set", "watchNamespace=apps"],
            "deploy/overlays/namespaced",
        ),
        (
            vec!["--set", "metricsServer=http://prometheus.istio-system:9090"],
            "deploy/overlays/istio",
        ),
        (
            vec![
                "--set",
                "metricsServer=http://prometheus.linkerd-viz:9090,provider=linkerd",
            ],
            "deploy/overlays/linkerd",
        ),
        (
            vec![
                "--set",
                "metricsServer=http://prometheus.monitoring:9090,provider=gatewayapi",
            ],
            "deploy/overlays/gatewayapi",
        ),
        (
            vec!["--set", "podMonitor.enabled=true"],
            "deploy/components/podmonitor",
        ),
    ] {
        let chart = helm_template(&set);
        let kustomized = match dir.strip_prefix("deploy/components/") {
            Some(component) => render_with_component(component),
            None => render(dir),
        };
        let (from_chart, from_kustomize) = (objects(&chart), objects(&kustomized));
        assert_eq!(
            from_chart.keys().collect::<Vec<_>>(),
            from_kustomize.keys().collect::<Vec<_>>(),
            "the chart ({set:?}) and {dir} make the same objects"
        );
        for (key, object) in &from_chart {
            assert_eq!(
                object, &from_kustomize[key],
                "{key:?} differs between the chart ({set:?}) and {dir}"
            );
        }
        println!("chart {set:?} = {dir}: {} objects", from_chart.len());
    }
    install_base();
    let _ = std::process::Command::new("kubectl")
        .args(["create", "namespace", "apps"])
        .output();
    for set in [vec![], vec!["--set", "watchNamespace=apps"]] {
        apply(&helm_template(&set), true);
    }
}
