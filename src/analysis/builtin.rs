//! The builtin metrics, `request-success-rate` (percent of non-5xx responses) and
//! `request-duration` (p99 in milliseconds), written in the PromQL each mesh's
//! telemetry needs. They are MetricTemplate queries like any other, rendered with the
//! same variables; `{{ target }}` is the workload under analysis.

/// Which mesh's telemetry the builtin queries read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Telemetry {
    Istio,
    Linkerd,
}

pub const REQUEST_SUCCESS_RATE: &str = "request-success-rate";
pub const REQUEST_DURATION: &str = "request-duration";

const ISTIO_SUCCESS_RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100"#;

const ISTIO_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#;

const LINKERD_SUCCESS_RATE: &str = r#"sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}])) / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) * 100"#;

const LINKERD_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))"#;

/// The query template of a builtin metric, or `None` if `name` is not builtin.
pub fn query(name: &str, telemetry: Telemetry) -> Option<&'static str> {
    match (name, telemetry) {
        (REQUEST_SUCCESS_RATE, Telemetry::Istio) => Some(ISTIO_SUCCESS_RATE),
        (REQUEST_DURATION, Telemetry::Istio) => Some(ISTIO_DURATION),
        (REQUEST_SUCCESS_RATE, Telemetry::Linkerd) => Some(LINKERD_SUCCESS_RATE),
        (REQUEST_DURATION, Telemetry::Linkerd) => Some(LINKERD_DURATION),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::template::{QueryVars, render};

    #[test]
    fn the_istio_success_rate_reads_destination_reported_requests_of_the_target() {
        let vars = QueryVars {
            namespace: "test".into(),
            target: "podinfo".into(),
            interval: "1m".into(),
            ..Default::default()
        };
        let q = render(
            query(REQUEST_SUCCESS_RATE, Telemetry::Istio).unwrap(),
            &vars,
        )
        .unwrap();
        assert!(q.contains(r#"reporter="destination",destination_workload_namespace="test",destination_workload=~"podinfo",response_code!~"5.*"}[1m]"#), "{q}");
    }

    #[test]
    fn builtin_queries_use_only_known_variables() {
        for telemetry in [Telemetry::Istio, Telemetry::Linkerd] {
            for name in [REQUEST_SUCCESS_RATE, REQUEST_DURATION] {
                render(query(name, telemetry).unwrap(), &QueryVars::default()).unwrap();
            }
        }
        assert_eq!(query("request-rate", Telemetry::Istio), None);
    }
}
