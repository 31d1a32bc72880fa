//! Every PromQL expression in `dashboards/` (panel targets, annotations and the
//! `label_values` of template variables) is run against the test Prometheus during a
//! promoted and a rolled-back release; each must parse and return data.

use std::time::Duration;

use serde_json::Value;
use serin::api::CanaryPhase;

use crate::fixture::{Rollout, canary_spec};
use crate::harness::{Env, eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(60);

/// Every expression of a dashboard, with where it is, as `(place, expr)`.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(e) = target["expr"].as_str() {
                out.push((format!("panel {:?}", panel["title"]), e.to_string()));
            }
        }
    }
    for a in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(e) = a["expr"].as_str() {
            out.push((format!("annotation {:?}", a["name"]), e.to_string()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        // label_values(<selector>, <label>): the selector must return series with the label.
        if let Some(q) = v["query"]["query"].as_str()
            && let Some(inner) = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
            && let Some((selector, label)) = inner.rsplit_once(',')
        {
            out.push((
                format!("variable {:?} (label {})", v["name"], label.trim()),
                selector.trim().to_string(),
            ));
        }
    }
    out
}

/// Grafana's variables, as they would be set while looking at this rollout.
fn substitute(expr: &str, ns: &str) -> String {
    expr.replace("$namespace", ns)
        .replace("$target", "podinfo")
        .replace("$__rate_interval", "30s")
        .replace("$__range", "10m")
}

/// A range query over the last `minutes`, as a Grafana panel runs it.
async fn query_range(env: &Env, query: &str, minutes: i64) -> Result<Vec<Value>, String> {
    let end = jiff::Timestamp::now().as_second();
    let start = end - minutes * 60;
    let url = format!("{}/api/v1/query_range", env.prometheus_url);
    let body: Value = reqwest::Client::new()
        .get(url)
        .query(&[
            ("query", query.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", "1".to_string()),
        ])
        .send()
        .await
        .map_err(|e| format!("Prometheus unreachable: {e}"))?
        .json()
        .await
        .map_err(|e| format!("not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("query failed: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Waits until `query`, run over the last 5 minutes as a panel runs it, returns data.
async fn await_data(env: &Env, what: &str, query: &str) {
    let what = format!("{what} to return data: {query}");
    eventually(&what, Duration::from_secs(30), || async {
        match query_range(env, query, 5).await {
            Ok(r) if !r.is_empty() => Ok(()),
            Ok(_) => Err("an empty result".to_string()),
            Err(e) => Err(e),
        }
    })
    .await;
}

/// Registers this test's controller as a scrape target of the test Prometheus.
fn scrape_controller(rollout: &Rollout) -> std::path::PathBuf {
    let address = crate::fixture::metrics_address(&rollout.controller_log_full())
        .expect("the controller logs its metrics address");
    let file = rollout
        .env
        .prometheus_targets
        .join(format!("serin-{}.json", rollout.ns));
    let targets =
        serde_json::json!([{"targets": [address], "labels": {"namespace_scope": rollout.ns}}]);
    std::fs::write(&file, targets.to_string()).unwrap();
    file
}

#[tokio::test]
async fn every_dashboard_query_returns_data_during_a_rollout() {
    with_namespace("e2e-dashboards", |client, ns| async move {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
        let rollout = Rollout::start(client, &ns).await;
        let log_has_address = || async {
            if rollout.controller_log_full().contains("serving /metrics") {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        };
        eventually("the controller's metrics address", SETTLE, log_has_address).await;
        let target_file = scrape_controller(&rollout);
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &canary_spec(1)).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        // Releases are hours apart in real life; here the next one would start at once,
        // before Prometheus scraped the promoted state that the release marker shows.
        let dashboard = dir.join("canary-analysis.json");
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
        let (place, promoted) = expressions(&dashboard)
            .into_iter()
            .find(|(place, _)| place.contains("Promoted"))
            .expect("the canary dashboard marks promotions");
        await_data(&rollout.env, &place, &substitute(&promoted, &ns)).await;
        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.2, 40.0)
            .await;
        rollout.await_phase(CanaryPhase::Failed, SETTLE).await;

        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let dashboard: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let vars = dashboard["templating"]["list"].as_array().unwrap();
            assert!(
                vars.iter()
                    .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
                "{} has a Prometheus datasource variable",
                path.display()
            );
            for (place, expr) in expressions(&dashboard) {
                let query = substitute(&expr, &ns);
                assert!(
                    !query.contains('$'),
                    "{place} in {}: unknown variable in {expr}",
                    path.display()
                );
                let what = format!("{place} of {}", path.display());
                await_data(&rollout.env, &what, &query).await;
                checked += 1;
            }
        }
        let _ = std::fs::remove_file(target_file);
        assert!(checked >= 15, "only {checked} expressions found");
        println!("{checked} dashboard expressions returned data");
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
