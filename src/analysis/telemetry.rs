//! Each mesh's request telemetry, defined once: the PromQL for the success rate, the
//! p99 latency (and, in [`crate::analysis::counts`], the raw request counters), from the series each mesh's proxies
//! export (Istio `istio_requests_total` and `istio_request_duration_milliseconds_bucket`
//! reported by the destination; Linkerd `response_total` and `response_latency_ms_bucket`
//! in the inbound direction).

use crate::api::Provider;

/// Which mesh's telemetry the queries read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Telemetry {
    Istio,
    Linkerd,
}

const ISTIO_SUCCESS_RATE: &str = r#"sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) * 100"#;

const ISTIO_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}])) by (le))"#;

const LINKERD_SUCCESS_RATE: &str = r#"sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",classification!="failure",direction="inbound"}[{{ interval }}])) / sum(rate(response_total{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) * 100"#;

const LINKERD_DURATION: &str = r#"histogram_quantile(0.99, sum(rate(response_latency_ms_bucket{namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"}[{{ interval }}])) by (le))"#;

impl Telemetry {
    /// The telemetry of a provider: Linkerd's for `linkerd`, Istio's otherwise (as
    /// Flagger reads Istio's series for the Gateway API and Kubernetes providers).
    pub fn of(provider: Provider) -> Telemetry {
        match provider {
            Provider::Linkerd => Telemetry::Linkerd,
            _ => Telemetry::Istio,
        }
    }

    /// Percent of non-5xx responses of `{{ target }}` over `{{ interval }}` (a template).
    pub fn success_rate(self) -> &'static str {
        match self {
            Telemetry::Istio => ISTIO_SUCCESS_RATE,
            Telemetry::Linkerd => LINKERD_SUCCESS_RATE,
        }
    }

    /// The p99 latency of `{{ target }}` in milliseconds over `{{ interval }}` (a template).
    pub fn duration(self) -> &'static str {
        match self {
            Telemetry::Istio => ISTIO_DURATION,
            Telemetry::Linkerd => LINKERD_DURATION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequential_counts_read_the_same_series_as_the_success_rate() {
        for (telemetry, series) in [
            (Telemetry::Istio, "istio_requests_total"),
            (Telemetry::Linkerd, "response_total"),
        ] {
            let q = crate::analysis::counts::queries(telemetry, "test", "podinfo", None);
            assert!(
                q.requests.contains(series) && q.errors.contains(series),
                "{q:?}"
            );
            assert!(telemetry.success_rate().contains(series));
        }
        assert_eq!(Telemetry::of(Provider::Linkerd), Telemetry::Linkerd);
        assert_eq!(Telemetry::of(Provider::Istio), Telemetry::Istio);
    }
}
