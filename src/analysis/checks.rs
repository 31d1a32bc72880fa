//! One analysis round: every metric of the Canary is queried and checked against its
//! `thresholdRange`. Any failure, missing data or unreachable Prometheus fails the
//! round with a message that names the metric and its value; nothing passes silently.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Client, ResourceExt};

use crate::analysis::{
    builtin::{self, Telemetry},
    prometheus::{PrometheusProvider, QueryError},
    template::{QueryVars, render},
};
use crate::api::{Canary, CanaryMetric, NoDataPolicy};
use crate::controller::stores::Stores;

/// Where a check reads what its metrics refer to: MetricTemplates from the controller's
/// cache, and their Secrets' content once per resourceVersion.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub client: &'a Client,
    pub stores: &'a Stores,
}

/// The value measured for one metric, or why there is none.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricResult {
    pub name: String,
    pub value: Option<f64>,
    /// Why the check failed; `None` when it passed.
    pub failure: Option<String>,
    /// The failure is that the query returned no data (no series or NaN).
    pub no_data: bool,
    /// The failure is that the metrics server could not answer (unreachable, timed out,
    /// or answered something that is not a query result): with `noData: hold` the round
    /// waits for it, as it waits for data.
    pub outage: bool,
    /// What no data counts as for this metric after the first window (`noData`).
    pub no_data_policy: NoDataPolicy,
}

/// The range a value must fall in: `thresholdRange`, or the deprecated `threshold`
/// (a minimum for the success rate, a maximum otherwise, as in Flagger).
fn range_of(metric: &CanaryMetric) -> (Option<f64>, Option<f64>) {
    if let Some(range) = &metric.threshold_range {
        return (range.min, range.max);
    }
    match metric.threshold {
        Some(t) if metric.name == builtin::REQUEST_SUCCESS_RATE => (Some(t), None),
        Some(t) => (None, Some(t)),
        None => (None, None),
    }
}

fn check_range(name: &str, value: f64, (min, max): (Option<f64>, Option<f64>)) -> Option<String> {
    if let Some(min) = min.filter(|m| value < *m) {
        return Some(format!("{name} {value:.2} is below the minimum {min}"));
    }
    if let Some(max) = max.filter(|m| value > *m) {
        return Some(format!("{name} {value:.2} is above the maximum {max}"));
    }
    None
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|ByteString(bytes)| String::from_utf8_lossy(bytes).trim().to_string())
}

/// The query text and the server for one metric.
pub(crate) async fn resolve(
    sources: Sources<'_>,
    canary: &Canary,
    metric: &CanaryMetric,
    default_address: &str,
) -> Result<(String, PrometheusProvider), String> {
    let ns = canary.namespace().unwrap_or_default();
    let default_address = canary
        .spec
        .metrics_server
        .as_deref()
        .unwrap_or(default_address);
    if let Some(tref) = &metric.template_ref {
        let tns = tref.namespace.clone().unwrap_or(ns.clone());
        let template = sources
            .stores
            .template(sources.client, &tns, &tref.name)
            .await
            .map_err(|e| format!("reading MetricTemplate {tns}/{}: {e}", tref.name))?
            .ok_or_else(|| {
                format!(
                    "MetricTemplate {tns}/{} not found: create it or fix templateRef",
                    tref.name
                )
            })?;
        let provider = &template.spec.provider;
        let mut address = provider
            .address
            .clone()
            .unwrap_or_else(|| default_address.to_string());
        let mut headers: Vec<(String, String)> = provider
            .headers
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
            .collect();
        if let Some(sref) = &provider.secret_ref {
            let secret = sources
                .stores
                .config::<Secret>(sources.client, &tns, &sref.name)
                .await
                .map_err(|e| format!("reading Secret {tns}/{}: {e}", sref.name))?
                .ok_or_else(|| {
                    format!(
                        "Secret {tns}/{} of MetricTemplate {} not found",
                        sref.name, tref.name
                    )
                })?;
            if let Some(a) = secret_value(&secret, "address") {
                address = a;
            }
            if let Some(token) = secret_value(&secret, "token") {
                headers.push(("Authorization".into(), format!("Bearer {token}")));
            }
        }
        let server = PrometheusProvider::new(&address, headers, provider.insecure_skip_verify)
            .map_err(|e| e.to_string())?;
        return Ok((template.spec.query.clone(), server));
    }
    let query = match &metric.query {
        Some(q) => q.clone(),
        None => builtin::query(&metric.name, Telemetry::of(canary.provider()))
            .ok_or_else(|| {
                format!(
                    "metric {} is neither builtin (request-success-rate, request-duration) nor has a templateRef or query",
                    metric.name
                )
            })?
            .to_string(),
    };
    let server =
        PrometheusProvider::new(default_address, Vec::new(), false).map_err(|e| e.to_string())?;
    Ok((query, server))
}

/// The window a threshold check reads: the metric's `interval`, but never reaching back
/// before the revision's first traffic (`since_first_traffic` ago). The canary's series
/// are per workload, not per revision, so a longer window would still hold the requests
/// of the release before it: a fix released right after a rollback would be judged on
/// the rolled-back release's errors. Whole seconds, at least one.
pub fn check_window(metric_interval: Duration, since_first_traffic: Duration) -> Duration {
    let secs = metric_interval.min(since_first_traffic).as_secs().max(1);
    Duration::from_secs(secs)
}

/// A window as PromQL writes it: the metric's own text when it is not clamped (so a
/// template sees what the user wrote), else whole seconds.
pub fn window_text(metric: &CanaryMetric, window: Duration) -> String {
    if window == metric.interval() {
        metric.interval_str().to_string()
    } else {
        format!("{}s", window.as_secs())
    }
}

/// The variables of a metric's query, with `{{ target }}` set to `workload` and
/// `{{ interval }}` to `window`.
pub(crate) fn query_vars(
    canary: &Canary,
    metric: &CanaryMetric,
    workload: &str,
    window: Duration,
) -> QueryVars {
    QueryVars {
        name: canary.name_any(),
        namespace: canary.namespace().unwrap_or_default(),
        target: workload.to_string(),
        service: canary.service_name().to_string(),
        interval: window_text(metric, window),
        variables: metric
            .template_variables
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Runs one metric check against `target` (the workload under analysis), over the
/// traffic it has had since `since_first_traffic` ago at most.
pub async fn check(
    sources: Sources<'_>,
    canary: &Canary,
    metric: &CanaryMetric,
    default_address: &str,
    since_first_traffic: Duration,
) -> MetricResult {
    let name = metric.name.clone();
    let fail = |failure: String| MetricResult {
        name: metric.name.clone(),
        value: None,
        failure: Some(failure),
        no_data: false,
        outage: false,
        no_data_policy: metric.no_data(),
    };
    let (query, server) = match resolve(sources, canary, metric, default_address).await {
        Ok(r) => r,
        Err(e) => return fail(format!("{name}: {e}")),
    };
    let window = check_window(metric.interval(), since_first_traffic);
    let vars = query_vars(canary, metric, &canary.spec.target_ref.name, window);
    let query = match render(&query, &vars) {
        Ok(q) => q,
        Err(e) => return fail(format!("{name}: {e}")),
    };
    match server.query_value(&query).await {
        Ok(value) => MetricResult {
            failure: check_range(&name, value, range_of(metric)),
            name,
            value: Some(value),
            no_data: false,
            outage: false,
            no_data_policy: metric.no_data(),
        },
        Err(e) => MetricResult {
            no_data: matches!(e, QueryError::NoData | QueryError::NaN),
            outage: e.is_outage(),
            ..fail(format!("{name}: {e}"))
        },
    }
}

/// Runs every threshold metric of the Canary.
pub async fn run(
    sources: Sources<'_>,
    canary: &Canary,
    default_address: &str,
    since_first_traffic: Duration,
) -> Vec<MetricResult> {
    let mut results = Vec::new();
    for metric in canary
        .spec
        .analysis
        .metrics
        .iter()
        .filter(|m| !m.is_compared())
    {
        results.push(
            check(
                sources,
                canary,
                metric,
                default_address,
                since_first_traffic,
            )
            .await,
        );
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ThresholdRange;

    fn metric(name: &str, min: Option<f64>, max: Option<f64>) -> CanaryMetric {
        CanaryMetric {
            name: name.into(),
            threshold_range: Some(ThresholdRange { min, max }),
            ..Default::default()
        }
    }

    #[test]
    fn a_check_never_reads_requests_served_before_the_revisions_first_traffic() {
        let minute = Duration::from_secs(60);
        // Two seconds after a fix got its first traffic, a 1m window would still hold
        // a minute of the rolled-back release's errors.
        assert_eq!(
            check_window(minute, Duration::from_millis(2_700)),
            Duration::from_secs(2)
        );
        assert_eq!(check_window(minute, Duration::from_secs(300)), minute);
        assert_eq!(check_window(minute, Duration::ZERO), Duration::from_secs(1));
        let m = metric("request-success-rate", Some(99.0), None);
        assert_eq!(window_text(&m, minute), "1m");
        assert_eq!(window_text(&m, Duration::from_secs(2)), "2s");
    }

    #[test]
    fn a_value_below_the_minimum_fails_with_the_metric_and_its_value() {
        let m = metric("request-success-rate", Some(99.0), None);
        assert_eq!(
            check_range(&m.name, 79.6, range_of(&m)),
            Some("request-success-rate 79.60 is below the minimum 99".into())
        );
        assert_eq!(check_range(&m.name, 99.5, range_of(&m)), None);
    }

    #[test]
    fn a_value_above_the_maximum_fails() {
        let m = metric("request-duration", None, Some(500.0));
        assert!(
            check_range(&m.name, 612.0, range_of(&m))
                .unwrap()
                .contains("above the maximum 500")
        );
    }

    #[test]
    fn the_deprecated_threshold_is_a_minimum_for_success_rate_and_a_maximum_otherwise() {
        let sr = CanaryMetric {
            name: "request-success-rate".into(),
            threshold: Some(99.0),
            ..Default::default()
        };
        let d = CanaryMetric {
            name: "request-duration".into(),
            threshold: Some(500.0),
            ..Default::default()
        };
        assert_eq!(range_of(&sr), (Some(99.0), None));
        assert_eq!(range_of(&d), (None, Some(500.0)));
    }
}
