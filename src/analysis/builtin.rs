//! The builtin metrics, `request-success-rate` (percent of non-5xx responses) and
//! `request-duration` (p99 in milliseconds), written in the PromQL each mesh's
//! telemetry needs. They are MetricTemplate queries like any other, rendered with the
//! same variables; `{{ target }}` is the workload under analysis. The PromQL itself is
//! each mesh's, in [`crate::analysis::telemetry`].

pub use crate::analysis::telemetry::Telemetry;

pub const REQUEST_SUCCESS_RATE: &str = "request-success-rate";
pub const REQUEST_DURATION: &str = "request-duration";

/// The query template of a builtin metric, or `None` if `name` is not builtin.
pub fn query(name: &str, telemetry: Telemetry) -> Option<&'static str> {
    match name {
        REQUEST_SUCCESS_RATE => Some(telemetry.success_rate()),
        REQUEST_DURATION => Some(telemetry.duration()),
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
