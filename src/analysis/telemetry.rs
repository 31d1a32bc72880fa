//! Each mesh's request telemetry, defined once: the PromQL for the success rate, the
//! p99 latency and the cumulative request counts, from the series each mesh's proxies
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

    /// The requests and the failed requests `workload` in `namespace` served in the last
    /// `seconds`, as two queries.
    pub fn counts(self, namespace: &str, workload: &str, seconds: u64) -> (String, String) {
        match self {
            Telemetry::Istio => {
                let sel = format!(
                    r#"reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{workload}""#
                );
                (
                    format!("sum(increase(istio_requests_total{{{sel}}}[{seconds}s]))"),
                    format!(
                        r#"sum(increase(istio_requests_total{{{sel},response_code=~"5.*"}}[{seconds}s]))"#
                    ),
                )
            }
            Telemetry::Linkerd => {
                let sel = format!(
                    r#"direction="inbound",namespace="{namespace}",deployment="{workload}""#
                );
                (
                    format!("sum(increase(response_total{{{sel}}}[{seconds}s]))"),
                    format!(
                        r#"sum(increase(response_total{{{sel},classification="failure"}}[{seconds}s]))"#
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_the_same_series_as_the_success_rate() {
        for (telemetry, series) in [
            (Telemetry::Istio, "istio_requests_total"),
            (Telemetry::Linkerd, "response_total"),
        ] {
            let (total, bad) = telemetry.counts("test", "podinfo", 30);
            assert!(
                total.contains(series) && bad.contains(series),
                "{total} {bad}"
            );
            assert!(telemetry.success_rate().contains(series));
            assert!(total.contains("[30s]"));
        }
        assert_eq!(Telemetry::of(Provider::Linkerd), Telemetry::Linkerd);
        assert_eq!(Telemetry::of(Provider::Istio), Telemetry::Istio);
    }
}
