//! The request counts of the sequential test, as served: the raw counter values (the sum
//! of each workload's counter series, instant queries) read at the first traffic of the
//! analysis and now, and their difference. No `increase()`: its extrapolation turns 200
//! served requests into 199.0 and lets a count go down between two reads. A counter
//! below its start value was reset (the workload's pods restarted): it is counted from
//! zero. The test itself ([`evaluate`]) is pure, so the plan runs it on the readings.

use kube::ResourceExt;

use crate::analysis::{
    prometheus::{PrometheusProvider, QueryError},
    stats::{Counts, SequentialConfig, SequentialDecision, decide, sequential},
    telemetry::Telemetry,
};
use crate::api::{Canary, CounterReadings, Sequential, WorkloadCounters};

/// The instant queries that read one workload's raw counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterQueries {
    pub requests: String,
    pub errors: String,
    /// The histogram's count of all requests (`le="+Inf"`) and of those within the
    /// latency bucket, when latency is tested.
    pub latency: Option<(String, String)>,
}

/// The counter queries of `workload` in `namespace`, from the mesh's own series.
pub fn queries(
    telemetry: Telemetry,
    namespace: &str,
    workload: &str,
    latency_bucket: Option<u64>,
) -> CounterQueries {
    // Prometheus 3 writes the `le` of a classic histogram as a float ("100.0"), older
    // versions as exported ("100"): either matches.
    let le = |b: u64| format!(r#"le=~"{b}(\\.0)?""#);
    match telemetry {
        Telemetry::Istio => {
            let sel = format!(
                r#"reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{workload}""#
            );
            let histogram = "istio_request_duration_milliseconds_bucket";
            CounterQueries {
                requests: format!("sum(istio_requests_total{{{sel}}})"),
                errors: format!(r#"sum(istio_requests_total{{{sel},response_code=~"5.*"}})"#),
                latency: latency_bucket.map(|b| {
                    (
                        format!(r#"sum({histogram}{{{sel},le="+Inf"}})"#),
                        format!("sum({histogram}{{{sel},{}}})", le(b)),
                    )
                }),
            }
        }
        Telemetry::Linkerd => {
            let sel =
                format!(r#"direction="inbound",namespace="{namespace}",deployment="{workload}""#);
            let histogram = "response_latency_ms_bucket";
            CounterQueries {
                requests: format!("sum(response_total{{{sel}}})"),
                errors: format!(r#"sum(response_total{{{sel},classification="failure"}})"#),
                latency: latency_bucket.map(|b| {
                    (
                        format!(r#"sum({histogram}{{{sel},le="+Inf"}})"#),
                        format!("sum({histogram}{{{sel},{}}})", le(b)),
                    )
                }),
            }
        }
    }
}

/// A counter value as a count: counters are whole numbers of requests.
fn whole(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value.round() as u64
    } else {
        0
    }
}

/// Reads one workload's counters now.
async fn read_workload(
    server: &PrometheusProvider,
    queries: &CounterQueries,
) -> Result<WorkloadCounters, String> {
    let value = |q: String| {
        let server = server.clone();
        async move {
            match server.query_value(&q).await {
                Ok(v) => Ok(Some(whole(v))),
                // A workload that served nothing yet has no series.
                Err(QueryError::NoData | QueryError::NaN) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let (requests, errors) = futures::join!(
        value(queries.requests.clone()),
        value(queries.errors.clone())
    );
    let mut counters = WorkloadCounters {
        requests: requests?.unwrap_or(0),
        errors: errors?.unwrap_or(0),
        ..WorkloadCounters::default()
    };
    if let Some((all, within)) = &queries.latency {
        let (all, within) = futures::join!(value(all.clone()), value(within.clone()));
        let (all, within) = (all?, within?);
        if all.is_some_and(|n| n > 0) && within.is_none() {
            return Err(format!(
                "the latency histogram has no bucket matching {within_query}: latencyBucket must be one of its le bounds",
                within_query = queries.latency.as_ref().map(|l| l.1.as_str()).unwrap_or("")
            ));
        }
        let (all, within) = (all.unwrap_or(0), within.unwrap_or(0));
        counters.timed = Some(all);
        counters.slow = Some(all.saturating_sub(within));
    }
    Ok(counters)
}

/// Reads the raw counters of the canary and the primary now.
pub async fn read(canary: &Canary, address: &str) -> Result<CounterReadings, String> {
    let ns = canary.namespace().unwrap_or_default();
    let telemetry = Telemetry::of(canary.provider());
    let bucket = canary.spec.analysis.sequential().latency_bucket();
    let address = canary.spec.metrics_server.as_deref().unwrap_or(address);
    let server = PrometheusProvider::new(address, Vec::new(), false).map_err(|e| e.to_string())?;
    let canary_queries = queries(telemetry, &ns, &canary.spec.target_ref.name, bucket);
    let primary_queries = queries(telemetry, &ns, &canary.primary_name(), bucket);
    let (c, p) = futures::join!(
        read_workload(&server, &canary_queries),
        read_workload(&server, &primary_queries)
    );
    Ok(CounterReadings {
        canary: c.map_err(|e| format!("sequential test: {e}"))?,
        primary: p.map_err(|e| format!("sequential test: {e}"))?,
    })
}

/// What one counter counted between `start` and `now`: a value below the start means the
/// counter was reset, and it counted `now` since.
pub fn served(start: u64, now: u64) -> u64 {
    if now < start { now } else { now - start }
}

fn served_option(start: Option<u64>, now: Option<u64>) -> Option<u64> {
    Some(served(start.unwrap_or(0), now?))
}

/// One workload's counts between two readings.
pub fn between(start: &WorkloadCounters, now: &WorkloadCounters) -> WorkloadCounters {
    WorkloadCounters {
        requests: served(start.requests, now.requests),
        errors: served(start.errors, now.errors),
        slow: served_option(start.slow, now.slow),
        timed: served_option(start.timed, now.timed),
    }
}

/// What the sequential test says.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Continue,
    /// The canary fails (or is slow) more often than the primary: the sentence.
    Rollback(String),
    /// The canary is at least as good as the primary (only with `promoteEarly`).
    Promote(String),
}

/// One evaluation: the decision, and the evidence as one sentence for the status and the
/// log (written whatever the decision, so a near miss is visible).
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub decision: Decision,
    pub evidence: String,
    /// The largest evidence against the canary among the tests (it rolls back at
    /// `1 / falseRollbackRate` of its test), for the analysis metric.
    pub against: f64,
}

/// The test's settings from the Canary's: with latency tested too, each of the two tests
/// gets half the false-rollback rate, so that together they keep it.
pub fn config(seq: &Sequential) -> SequentialConfig {
    let tests = if seq.latency_bucket().is_some() {
        2.0
    } else {
        1.0
    };
    SequentialConfig {
        false_rollback_rate: seq.false_rollback_rate() / tests,
        min_requests: seq.min_requests(),
        promote_early: seq.promote_early,
        max_ratio_h1: seq.regression_ratio(),
    }
}

fn as_counts(canary: (u64, u64), primary: (u64, u64)) -> Counts {
    Counts {
        canary_total: canary.0 as f64,
        canary_bad: canary.1 as f64,
        primary_total: primary.0 as f64,
        primary_bad: primary.1 as f64,
    }
}

fn describe(what: &str, c: &Counts, cfg: &SequentialConfig) -> String {
    let pct = |bad: f64, total: f64| {
        if total > 0.0 {
            100.0 * bad / total
        } else {
            0.0
        }
    };
    let e = sequential::evidence(c, cfg);
    format!(
        "{what}: canary {} of {} ({:.2}%), primary {} of {} ({:.2}%), evidence against the canary {:.1} and for it {:.1} (decides at {:.0})",
        c.canary_bad,
        c.canary_total,
        pct(c.canary_bad, c.canary_total),
        c.primary_bad,
        c.primary_total,
        pct(c.primary_bad, c.primary_total),
        e.rollback,
        e.promote,
        1.0 / cfg.false_rollback_rate,
    )
}

/// The sequential test on the counts between `start` and `now`: errors, and slow
/// requests when `latencyBucket` is set. Either test rolls back; promotion needs both.
pub fn evaluate(start: &CounterReadings, now: &CounterReadings, seq: &Sequential) -> Evaluation {
    let cfg = config(seq);
    let c = between(&start.canary, &now.canary);
    let p = between(&start.primary, &now.primary);
    let mut tests = vec![(
        "errors".to_string(),
        as_counts((c.requests, c.errors), (p.requests, p.errors)),
    )];
    if let (Some(bucket), Some(ct), Some(cs), Some(pt), Some(ps)) =
        (seq.latency_bucket(), c.timed, c.slow, p.timed, p.slow)
    {
        tests.push((
            format!("slower than {bucket}ms"),
            as_counts((ct, cs), (pt, ps)),
        ));
    }
    let mut sentences = Vec::new();
    let mut rollback = None;
    let mut promote = true;
    let mut against: f64 = 0.0;
    for (what, counts) in &tests {
        sentences.push(describe(what, counts, &cfg));
        against = against.max(sequential::evidence(counts, &cfg).rollback);
        match decide(counts, &cfg) {
            SequentialDecision::Rollback { reason, .. } if rollback.is_none() => {
                rollback = Some(format!("sequential test ({what}): {reason}"));
            }
            SequentialDecision::Promote { .. } => {}
            _ => promote = false,
        }
    }
    let evidence = sentences.join("; ");
    let decision = match rollback {
        Some(reason) => Decision::Rollback(reason),
        None if promote && cfg.promote_early => Decision::Promote(format!(
            "sequential test: the canary is no worse than the primary ({evidence})"
        )),
        None => Decision::Continue,
    };
    Evaluation {
        decision,
        evidence,
        against,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(requests: u64, errors: u64) -> WorkloadCounters {
        WorkloadCounters {
            requests,
            errors,
            ..WorkloadCounters::default()
        }
    }

    fn readings(c: WorkloadCounters, p: WorkloadCounters) -> CounterReadings {
        CounterReadings {
            canary: c,
            primary: p,
        }
    }

    #[test]
    fn counts_are_what_was_served_since_the_start() {
        let start = workload(1000, 7);
        assert_eq!(between(&start, &workload(1200, 9)), workload(200, 2));
        // 200 served requests are 200, never 199.0: `minRequests: 200` is met.
        let seq = Sequential {
            enabled: true,
            ..Sequential::default()
        };
        let e = evaluate(
            &readings(workload(0, 0), start),
            &readings(workload(200, 0), workload(1200, 9)),
            &seq,
        );
        assert!(
            e.evidence
                .starts_with("errors: canary 0 of 200 (0.00%), primary 2 of 200 (1.00%)"),
            "{}",
            e.evidence
        );
    }

    #[test]
    fn a_counter_below_its_start_was_reset_and_counts_from_zero() {
        assert_eq!(served(500, 40), 40);
        assert_eq!(served(500, 500), 0);
        assert_eq!(served(500, 540), 40);
        let start = WorkloadCounters {
            requests: 900,
            errors: 10,
            slow: Some(30),
            timed: Some(900),
        };
        let now = WorkloadCounters {
            requests: 50,
            errors: 1,
            slow: Some(2),
            timed: Some(50),
        };
        assert_eq!(
            between(&start, &now),
            WorkloadCounters {
                requests: 50,
                errors: 1,
                slow: Some(2),
                timed: Some(50),
            }
        );
    }

    #[test]
    fn counter_values_are_whole_requests() {
        assert_eq!(whole(199.99999), 200);
        assert_eq!(whole(f64::NAN), 0);
        assert_eq!(whole(-3.0), 0);
    }

    #[test]
    fn ten_percent_errors_roll_back_with_the_counts_in_the_sentence() {
        let seq = Sequential {
            enabled: true,
            ..Sequential::default()
        };
        let e = evaluate(
            &readings(workload(0, 0), workload(10_000, 10)),
            &readings(workload(1000, 100), workload(19_000, 19)),
            &seq,
        );
        match e.decision {
            Decision::Rollback(reason) => assert!(
                reason.contains("canary 100 of 1000 requests (10.00%), primary 9 of 9000"),
                "{reason}"
            ),
            other => panic!("expected a rollback, got {other:?}"),
        }
    }

    #[test]
    fn slow_requests_roll_back_on_their_own_test_at_half_the_rate() {
        let seq = Sequential {
            enabled: true,
            latency_bucket: Some(100),
            ..Sequential::default()
        };
        assert_eq!(config(&seq).false_rollback_rate, 0.005);
        let slow = |requests, slow| WorkloadCounters {
            requests,
            errors: 0,
            slow: Some(slow),
            timed: Some(requests),
        };
        let e = evaluate(
            &readings(slow(0, 0), slow(0, 0)),
            &readings(slow(2000, 200), slow(8000, 80)),
            &seq,
        );
        assert!(
            matches!(&e.decision, Decision::Rollback(r) if r.contains("slower than 100ms")),
            "{e:?}"
        );
        assert!(e.evidence.contains("errors: canary 0 of 2000"), "{e:?}");
    }

    #[test]
    fn promotion_needs_every_test_and_promote_early() {
        let mut seq = Sequential {
            enabled: true,
            ..Sequential::default()
        };
        let start = readings(workload(0, 0), workload(0, 0));
        let now = readings(workload(20_000, 100), workload(40_000, 200));
        assert_eq!(evaluate(&start, &now, &seq).decision, Decision::Continue);
        seq.promote_early = true;
        assert!(matches!(
            evaluate(&start, &now, &seq).decision,
            Decision::Promote(_)
        ));
    }

    #[test]
    fn the_queries_read_raw_counters_of_each_mesh() {
        for (telemetry, counter, histogram) in [
            (
                Telemetry::Istio,
                "istio_requests_total",
                "istio_request_duration_milliseconds_bucket",
            ),
            (
                Telemetry::Linkerd,
                "response_total",
                "response_latency_ms_bucket",
            ),
        ] {
            let q = queries(telemetry, "test", "podinfo", Some(250));
            assert!(q.requests.starts_with(&format!("sum({counter}{{")));
            assert!(!q.requests.contains("increase") && !q.errors.contains("increase"));
            let (all, within) = q.latency.unwrap();
            assert!(
                all.contains(histogram) && all.contains(r#"le="+Inf""#),
                "{all}"
            );
            assert!(within.contains(r#"le=~"250(\\.0)?""#), "{within}");
            assert_eq!(queries(telemetry, "test", "podinfo", None).latency, None);
        }
    }
}
