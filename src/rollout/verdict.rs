//! The verdict of one analysis round: the rules that turn threshold checks, the
//! statistical judgement and the sequential test into pass, hold, fail or roll back.
//! Pure: the controller gathers the evidence, this module decides what it means.

use std::fmt;

use crate::analysis::{checks::MetricResult, compare::Judgement};
use crate::api::NoDataPolicy;

/// Why a round did not pass: one readable message, and the metric (or gate) that
/// decided with the value it measured, for events and notifications.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Finding {
    pub metric: Option<String>,
    pub value: Option<f64>,
    pub message: String,
}

impl Finding {
    /// A finding of a gate (an abort, the progress deadline) rather than a metric.
    pub fn gate(name: &str, message: String) -> Finding {
        Finding {
            metric: Some(name.to_string()),
            value: None,
            message,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&str> for Finding {
    fn from(message: &str) -> Finding {
        Finding {
            message: message.to_string(),
            ..Finding::default()
        }
    }
}

impl From<String> for Finding {
    fn from(message: String) -> Finding {
        Finding {
            message,
            ..Finding::default()
        }
    }
}

/// The combined outcome of one analysis round.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    /// Neither pass nor fail (a marginal judge score, or data still missing in the first
    /// window): hold the weight.
    Hold(Finding),
    /// The checks that failed.
    Fail(Finding),
    /// The evidence already shows a regression: roll back now.
    Rollback(Finding),
}

/// Everything measured in one round.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// The threshold checks.
    pub checks: Vec<MetricResult>,
    /// The sequential test: `Ok(Some(reason))` when it calls for a rollback, `Err` when
    /// it could not be run.
    pub sequential: Result<Option<String>, String>,
    /// The statistical judgement of compared metrics, if any are configured.
    pub judgement: Option<Judgement>,
    /// The canary has had traffic for less than the longest metric window (and the
    /// time Prometheus takes to fill it), so missing
    /// data means "not yet", not "broken".
    pub in_first_window: bool,
    /// The `rollout` webhooks that did not pass this round: each is a failed check, as in
    /// Flagger.
    pub failed_webhooks: Vec<Finding>,
}

/// The threshold checks alone. Missing data while the canary has had traffic for less
/// than the longest metric window is a wait, not a failure: the window cannot hold the
/// canary's requests yet. After that, each metric's `noData` says what it counts as:
/// a failed check (the default), a hold (the weight waits, nothing is counted), or a pass.
pub fn of_checks(results: &[MetricResult], in_first_window: bool) -> Verdict {
    let policy = |r: &MetricResult| {
        if in_first_window {
            NoDataPolicy::Hold
        } else {
            r.no_data_policy
        }
    };
    let failed: Vec<&MetricResult> = results
        .iter()
        .filter(|r| r.failure.is_some() && !(r.no_data && policy(r) == NoDataPolicy::Pass))
        .collect();
    let Some(first) = failed.first() else {
        return Verdict::Pass;
    };
    let message = failed
        .iter()
        .filter_map(|r| r.failure.as_deref())
        .collect::<Vec<_>>()
        .join("; ");
    // An outage of the metrics server holds only where the metric itself says `hold`
    // (never `pass`: no answer is never a pass, and the first window does not excuse it).
    let held = |r: &MetricResult| {
        (r.no_data && policy(r) == NoDataPolicy::Hold)
            || (r.outage && r.no_data_policy == NoDataPolicy::Hold)
    };
    let counted = failed.iter().find(|r| !held(r));
    match counted {
        Some(decided) => Verdict::Fail(Finding {
            metric: Some(decided.name.clone()),
            value: decided.value,
            message,
        }),
        None => Verdict::Hold(Finding {
            metric: Some(first.name.clone()),
            value: None,
            message: if failed.iter().any(|r| r.outage) {
                format!(
                    "holding while the metrics server does not answer (noData: hold): {message}"
                )
            } else if in_first_window {
                format!("waiting for the first metric window: {message}")
            } else {
                format!("holding for data (noData: hold): {message}")
            },
        }),
    }
}

/// Adds a failure to a verdict: a failed round stays failed (with both reasons), a
/// rollback stays a rollback.
fn fail_with(verdict: Verdict, reason: Finding) -> Verdict {
    match verdict {
        Verdict::Fail(existing) => Verdict::Fail(Finding {
            message: format!("{existing}; {reason}"),
            ..existing
        }),
        Verdict::Rollback(r) => Verdict::Rollback(r),
        Verdict::Pass | Verdict::Hold(_) => Verdict::Fail(reason),
    }
}

/// Holds a round that would have passed.
fn hold(verdict: Verdict, reason: Finding) -> Verdict {
    match verdict {
        Verdict::Pass => Verdict::Hold(reason),
        other => other,
    }
}

/// The verdict of a round. A sequential rollback overrides everything; a sequential
/// test that could not run, a failed judgement or a judgement with no data after the
/// first window fails the round; a marginal judgement (or no data yet) holds a round
/// that would have passed.
pub fn decide(evidence: &Evidence) -> Verdict {
    let mut verdict = of_checks(&evidence.checks, evidence.in_first_window);
    for failed in &evidence.failed_webhooks {
        verdict = fail_with(verdict, failed.clone());
    }
    let verdict = match &evidence.sequential {
        Ok(Some(reason)) => {
            return Verdict::Rollback(Finding::gate("sequential-test", reason.clone()));
        }
        Ok(None) => verdict,
        Err(e) => fail_with(
            verdict,
            Finding::gate("sequential-test", format!("sequential test: {e}")),
        ),
    };
    match &evidence.judgement {
        None | Some(Judgement::Pass) => verdict,
        Some(Judgement::Fail(reason)) => fail_with(verdict, Finding::gate("judge", reason.clone())),
        Some(Judgement::NoData(reason)) if evidence.in_first_window => hold(
            verdict,
            Finding::gate("judge", format!("waiting for samples: {reason}")),
        ),
        Some(Judgement::NoData(reason)) => {
            fail_with(verdict, Finding::gate("judge", reason.clone()))
        }
        Some(Judgement::Marginal(reason)) => hold(verdict, Finding::gate("judge", reason.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(name: &str, value: f64) -> MetricResult {
        MetricResult {
            name: name.into(),
            value: Some(value),
            failure: None,
            no_data: false,
            outage: false,
            no_data_policy: NoDataPolicy::Fail,
        }
    }

    fn failed(name: &str, value: f64, why: &str) -> MetricResult {
        MetricResult {
            failure: Some(why.into()),
            ..ok(name, value)
        }
    }

    fn no_data(name: &str) -> MetricResult {
        MetricResult {
            name: name.into(),
            value: None,
            failure: Some(format!("{name}: no data")),
            no_data: true,
            outage: false,
            no_data_policy: NoDataPolicy::Fail,
        }
    }

    fn outage_with(name: &str, policy: NoDataPolicy) -> MetricResult {
        MetricResult {
            name: name.into(),
            value: None,
            failure: Some(format!(
                "{name}: Prometheus at http://prometheus:9090 is unreachable"
            )),
            no_data: false,
            outage: true,
            no_data_policy: policy,
        }
    }

    #[test]
    fn a_metrics_server_that_does_not_answer_holds_only_a_metric_that_says_hold() {
        let held = of_checks(&[outage_with("rate", NoDataPolicy::Hold)], false);
        assert!(
            matches!(&held, Verdict::Hold(f) if f.message.starts_with("holding while the metrics server does not answer (noData: hold): rate: Prometheus")),
            "{held:?}"
        );
        for in_first_window in [true, false] {
            for policy in [NoDataPolicy::Fail, NoDataPolicy::Pass] {
                assert!(
                    matches!(
                        of_checks(&[outage_with("rate", policy)], in_first_window),
                        Verdict::Fail(_)
                    ),
                    "no answer is never a pass ({policy:?}, first window {in_first_window})"
                );
            }
        }
        assert!(
            matches!(
                of_checks(
                    &[
                        outage_with("rate", NoDataPolicy::Hold),
                        failed("latency", 900.0, "latency too high")
                    ],
                    false
                ),
                Verdict::Fail(f) if f.metric.as_deref() == Some("latency")
            ),
            "an answer that fails still counts"
        );
    }

    fn no_data_with(name: &str, policy: NoDataPolicy) -> MetricResult {
        MetricResult {
            no_data_policy: policy,
            ..no_data(name)
        }
    }

    #[test]
    fn each_metric_says_what_no_data_counts_as_after_the_first_window() {
        let hold = of_checks(&[no_data_with("latency", NoDataPolicy::Hold)], false);
        assert!(
            matches!(&hold, Verdict::Hold(f) if f.message.starts_with("holding for data (noData: hold): latency: no data")),
            "{hold:?}"
        );
        assert_eq!(
            of_checks(&[no_data_with("latency", NoDataPolicy::Pass)], false),
            Verdict::Pass
        );
        assert!(matches!(
            of_checks(&[no_data_with("latency", NoDataPolicy::Fail)], false),
            Verdict::Fail(_)
        ));
        // A held metric does not hide another metric's failure.
        let v = of_checks(
            &[
                no_data_with("latency", NoDataPolicy::Hold),
                failed("rate", 90.0, "rate 90 is below 99"),
            ],
            false,
        );
        assert!(
            matches!(&v, Verdict::Fail(f) if f.metric.as_deref() == Some("rate")),
            "{v:?}"
        );
        // The first window holds whatever the policy.
        for policy in [NoDataPolicy::Fail, NoDataPolicy::Hold, NoDataPolicy::Pass] {
            let v = of_checks(&[no_data_with("latency", policy)], true);
            assert!(
                matches!(&v, Verdict::Hold(f) if f.message.starts_with("waiting for the first metric window")),
                "{policy:?}: {v:?}"
            );
        }
    }

    fn evidence(checks: Vec<MetricResult>) -> Evidence {
        Evidence {
            checks,
            sequential: Ok(None),
            judgement: None,
            in_first_window: false,
            failed_webhooks: Vec::new(),
        }
    }

    #[test]
    fn passing_checks_pass() {
        assert_eq!(decide(&evidence(vec![ok("rate", 99.9)])), Verdict::Pass);
    }

    #[test]
    fn a_failed_check_fails_the_round_naming_the_metric_and_its_value() {
        let v = decide(&evidence(vec![
            ok("latency", 40.0),
            failed("rate", 80.0, "rate 80.00 is below the minimum 99"),
        ]));
        let Verdict::Fail(f) = v else { panic!("{v:?}") };
        assert_eq!(f.metric.as_deref(), Some("rate"));
        assert_eq!(f.value, Some(80.0));
        assert!(f.message.contains("below the minimum 99"), "{f}");
    }

    #[test]
    fn no_data_holds_in_the_first_window_and_fails_after_it() {
        let mut e = evidence(vec![no_data("rate")]);
        e.in_first_window = true;
        assert!(matches!(decide(&e), Verdict::Hold(_)));
        e.in_first_window = false;
        assert!(matches!(decide(&e), Verdict::Fail(_)));
    }

    #[test]
    fn no_data_beside_a_real_failure_fails_even_in_the_first_window() {
        let mut e = evidence(vec![no_data("latency"), failed("rate", 50.0, "rate low")]);
        e.in_first_window = true;
        assert!(matches!(decide(&e), Verdict::Fail(_)));
    }

    #[test]
    fn a_sequential_rollback_overrides_everything() {
        let mut e = evidence(vec![failed("rate", 50.0, "rate low")]);
        e.sequential = Ok(Some("error rate 10% against 0.1%".into()));
        e.judgement = Some(Judgement::Pass);
        let Verdict::Rollback(f) = decide(&e) else {
            panic!()
        };
        assert_eq!(f.metric.as_deref(), Some("sequential-test"));
    }

    #[test]
    fn an_unreachable_prometheus_in_the_sequential_test_is_never_a_pass() {
        let mut e = evidence(vec![ok("rate", 99.9)]);
        e.sequential = Err("connection refused".into());
        assert!(matches!(decide(&e), Verdict::Fail(f) if f.message.contains("connection refused")));
    }

    #[test]
    fn the_judgement_fails_holds_or_passes_a_round() {
        let with = |j: Judgement, first: bool| {
            let mut e = evidence(vec![ok("rate", 99.9)]);
            e.judgement = Some(j);
            e.in_first_window = first;
            decide(&e)
        };
        assert!(matches!(with(Judgement::Pass, false), Verdict::Pass));
        assert!(matches!(
            with(Judgement::Marginal("80".into()), false),
            Verdict::Hold(_)
        ));
        assert!(matches!(
            with(Judgement::Fail("worse".into()), false),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            with(Judgement::NoData("none".into()), true),
            Verdict::Hold(_)
        ));
        assert!(matches!(
            with(Judgement::NoData("none".into()), false),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn a_failed_rollout_webhook_fails_the_round_even_when_the_metrics_pass() {
        let mut e = evidence(vec![ok("rate", 99.9)]);
        e.failed_webhooks = vec![Finding::gate(
            "load-test",
            "webhook load-test answered 500".into(),
        )];
        let Verdict::Fail(f) = decide(&e) else {
            panic!()
        };
        assert_eq!(f.metric.as_deref(), Some("load-test"));
        e.in_first_window = true;
        e.checks = vec![no_data("rate")];
        assert!(matches!(decide(&e), Verdict::Fail(_)));
    }

    #[test]
    fn a_failed_judgement_adds_its_reason_to_failed_checks() {
        let mut e = evidence(vec![failed("rate", 50.0, "rate low")]);
        e.judgement = Some(Judgement::Fail("latency worse".into()));
        let Verdict::Fail(f) = decide(&e) else {
            panic!()
        };
        assert_eq!(f.metric.as_deref(), Some("rate"));
        assert!(
            f.message.contains("rate low") && f.message.contains("latency worse"),
            "{f}"
        );
    }
}
