//! Statistical judgement of a release (serin's addition to Flagger's fixed thresholds):
//! metrics with `compare` are sampled per time slice for the canary and the primary and
//! judged with Mann-Whitney U and a Hodges-Lehmann interval (Kayenta's method), then
//! combined into a Pass/Marginal/Fail score. The sequential test on the request counts
//! is in [`crate::analysis::counts`].

use std::time::Duration;

use crate::analysis::{
    checks::{Sources, query_vars, resolve},
    stats::{self, Classification, CompareConfig, ScoreThresholds},
    template::render,
};
use crate::api::{self, Canary, CanaryMetric};

/// The judge's outcome for one round.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    Pass,
    Marginal(String),
    Fail(String),
    /// Not a pass only because samples are missing.
    NoData(String),
}

/// Fewer finite samples than this on either side is no data: a rank test on one or
/// two slices says nothing.
const MIN_SAMPLES: usize = 3;

fn config_of(c: &api::MetricComparison) -> CompareConfig {
    CompareConfig {
        direction: match c.direction() {
            api::Direction::Increase => stats::Direction::Increase,
            api::Direction::Decrease => stats::Direction::Decrease,
            api::Direction::Either => stats::Direction::Either,
        },
        confidence: c.confidence(),
        tolerance: c.tolerance(),
        max_ratio: c.max_ratio,
        min_ratio: c.min_ratio,
        no_data: match c.no_data() {
            api::NoDataPolicy::Fail => stats::NoDataPolicy::Fail,
            api::NoDataPolicy::Pass => stats::NoDataPolicy::Pass,
            api::NoDataPolicy::Hold => stats::NoDataPolicy::Hold,
        },
        weight: c.weight(),
        critical: c.critical,
        ..Default::default()
    }
}

/// The time slices a compared metric is sampled on, all within the revision's own
/// traffic: each slice reads `window` (the metric's interval, shortened early in the
/// analysis so that there are at least a few slices), and the first slice ends `window`
/// after the first traffic, so that none reaches back before it. `None` while there is
/// too little traffic for three slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slices {
    /// What each slice reads (`{{ interval }}`).
    pub window: Duration,
    /// From the first slice's end to now.
    pub range: Duration,
    pub step: Duration,
}

pub fn slices(metric_interval: Duration, since_first_traffic: Duration) -> Option<Slices> {
    let since = since_first_traffic.as_secs();
    let window = metric_interval.as_secs().min(since / 3).max(1);
    let range = since.checked_sub(window)?;
    let step = (range / 20).max(1);
    (range / step + 1 >= MIN_SAMPLES as u64).then(|| Slices {
        window: Duration::from_secs(window),
        range: Duration::from_secs(range),
        step: Duration::from_secs(step),
    })
}

/// Samples of `metric` for `workload`, one value per slice of [`slices`].
async fn samples(
    sources: Sources<'_>,
    canary: &Canary,
    metric: &CanaryMetric,
    address: &str,
    workload: &str,
    since_start: Duration,
) -> Result<Vec<f64>, String> {
    let Some(slices) = slices(metric.interval(), since_start) else {
        return Ok(Vec::new());
    };
    let (query, server) = resolve(sources, canary, metric, address).await?;
    let vars = query_vars(canary, metric, workload, slices.window);
    let query = render(&query, &vars).map_err(|e| e.to_string())?;
    match server.query_slices(&query, slices.range, slices.step).await {
        Ok(values) => Ok(values),
        Err(crate::analysis::prometheus::QueryError::NoData) => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

/// Judges every compared metric of the Canary and scores the round.
pub async fn judge(
    sources: Sources<'_>,
    canary: &Canary,
    address: &str,
    since_start: Duration,
) -> Option<Judgement> {
    let compared: Vec<&CanaryMetric> = canary
        .spec
        .analysis
        .metrics
        .iter()
        .filter(|m| m.is_compared())
        .collect();
    if compared.is_empty() {
        return None;
    }
    let primary = canary.primary_name();
    let target = canary.spec.target_ref.name.clone();
    let mut verdicts = Vec::new();
    let mut reasons = Vec::new();
    let mut all_no_data = true;
    for metric in compared {
        let cfg = config_of(
            metric
                .compare
                .as_ref()
                .expect("compared metrics have compare"),
        );
        let (canary_samples, primary_samples) = match (
            samples(sources, canary, metric, address, &target, since_start).await,
            samples(sources, canary, metric, address, &primary, since_start).await,
        ) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(e), _) | (_, Err(e)) => {
                // An unreachable Prometheus is never a pass, whatever the NoData policy.
                return Some(Judgement::Fail(format!("{}: {e}", metric.name)));
            }
        };
        let finite = |v: &[f64]| v.iter().filter(|x| x.is_finite()).count();
        let (nc, np) = (finite(&canary_samples), finite(&primary_samples));
        let verdict = if nc < MIN_SAMPLES || np < MIN_SAMPLES {
            stats::compare(&[], &[], &cfg)
        } else {
            stats::compare(&canary_samples, &primary_samples, &cfg)
        };
        tracing::info!(
            metric = %metric.name,
            classification = ?verdict.classification,
            p_value = verdict.p_value,
            mean_ratio = verdict.mean_ratio,
            reason = %verdict.reason,
            "compared canary with primary"
        );
        match verdict.classification {
            Classification::Pass => {}
            Classification::NoData => reasons.push(format!(
                "{}: too few samples (canary {nc}, primary {np}, at least {MIN_SAMPLES} each)",
                metric.name
            )),
            _ => {
                all_no_data = false;
                reasons.push(format!("{}: {}", metric.name, verdict.reason));
            }
        }
        verdicts.push((
            cfg.weight,
            cfg.critical,
            verdict.classification,
            cfg.no_data,
        ));
    }
    let judge = canary.spec.analysis.judge();
    let thresholds = ScoreThresholds {
        pass: judge.pass_score(),
        marginal: judge.marginal_score(),
    };
    let score = stats::score(&verdicts, &thresholds);
    let summary = format!(
        "judge score {:.0} (pass {}, marginal {})",
        score.value, thresholds.pass, thresholds.marginal
    );
    Some(match score.outcome {
        stats::Outcome::Pass => Judgement::Pass,
        _ if all_no_data => Judgement::NoData(format!("{summary}: {}", reasons.join("; "))),
        stats::Outcome::Marginal => {
            Judgement::Marginal(format!("{summary}: {}", reasons.join("; ")))
        }
        stats::Outcome::Fail => Judgement::Fail(format!("{summary}: {}", reasons.join("; "))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_compared_slice_reaches_back_before_the_revisions_first_traffic() {
        let minute = Duration::from_secs(60);
        for since in [3, 9, 10, 30, 61, 90, 600, 3600] {
            let since_first_traffic = Duration::from_secs(since);
            let Some(s) = slices(minute, since_first_traffic) else {
                continue;
            };
            // The first slice ends `range` before now and reads `window` before that.
            assert!(
                s.range + s.window <= since_first_traffic,
                "{since}s after first traffic: {s:?}"
            );
            assert!(s.window <= minute && s.step >= Duration::from_secs(1));
            assert!(s.range.as_secs() / s.step.as_secs() + 1 >= MIN_SAMPLES as u64);
        }
        assert_eq!(slices(minute, Duration::from_secs(2)), None);
        let later = slices(minute, Duration::from_secs(600)).unwrap();
        assert_eq!(later.window, minute);
    }
}
