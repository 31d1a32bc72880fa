//! What a reconcile runs before it plans, as `plan::needs` asks: the metric checks, the
//! comparisons and the sequential test (gathered into `verdict::Evidence`), the
//! conformance-test Jobs, and the webhooks.

use super::*;

/// Time since the current analysis started (zero before it starts).
pub(super) fn since_analysis_start(canary: &Canary, now: Timestamp) -> Duration {
    canary
        .status
        .as_ref()
        .and_then(|s| s.analysis_start_time.as_ref())
        .map(|t| now.duration_since(t.0).unsigned_abs())
        .unwrap_or_default()
}

/// Whether the canary's traffic is too young for its metrics to have data: less than
/// the longest metric window, plus the time Prometheus takes to scrape and store that
/// window's samples (half the window, at least [`SCRAPE_GRACE`]).
pub(super) fn in_first_window(canary: &Canary, now: Timestamp) -> bool {
    let window = canary
        .spec
        .analysis
        .metrics
        .iter()
        .map(|m| m.interval())
        .max()
        .unwrap_or_default();
    since_analysis_start(canary, now) < first_window(window)
}

/// The least time, beyond the window itself, that missing data is waited for.
const SCRAPE_GRACE: Duration = Duration::from_secs(5);

/// How long missing data holds a round rather than failing it, for a metric window.
fn first_window(window: Duration) -> Duration {
    window + (window / 2).max(SCRAPE_GRACE)
}

/// Runs every check of one round (the I/O); `verdict::decide` says what it means.
/// `counters` is this reconcile's reading for the sequential test, which the plan
/// evaluates; a reading that failed fails the round here, as any unreadable metric.
pub(super) async fn gather(
    ctx: &Context,
    canary: &Canary,
    now: Timestamp,
    counters: Option<&Result<crate::api::CounterReadings, String>>,
) -> Evidence {
    let address = &ctx.config.metrics_server;
    let since_start = since_analysis_start(canary, now);
    let sources = checks::Sources {
        client: &ctx.client,
        stores: &ctx.stores,
    };
    // Flagger runs the `rollout` webhooks (often a load generator) before the checks;
    // they run here side by side, so a slow one adds its own latency only once.
    let (checks, hooks) = futures::join!(
        checks::run(sources, canary, address, since_start),
        webhooks::call_all(canary, WebhookType::Rollout, CanaryPhase::Progressing),
    );
    let failed_webhooks = hooks
        .iter()
        .filter(|c| !c.answer.passed())
        .map(|c| c.finding())
        .collect();
    for r in &checks {
        info!(metric = %r.name, value = ?r.value, failure = ?r.failure, "metric check");
        if let Some(value) = r.value {
            ctx.metrics.set_metric_analysis(
                &canary.spec.target_ref.name,
                &canary.namespace().unwrap_or_default(),
                &r.name,
                value,
            );
        }
    }
    let sequential = match counters {
        Some(Err(e)) => Err(e.clone()),
        _ => Ok(None),
    };
    let judgement = compare::judge(sources, canary, address, since_start).await;
    Evidence {
        checks,
        sequential,
        judgement,
        in_first_window: in_first_window(canary, now),
        failed_webhooks,
    }
}

/// Starts the conformance-test Jobs of `revision` and `run` that do not exist yet (their
/// names are deterministic, so a restarted controller finds the ones it started),
/// deletes the Jobs of older revisions, and reads where the tests stand.
pub(super) async fn conformance(
    client: &Client,
    canary: &Canary,
    revision: &str,
    run: plan::ConformanceRun,
) -> Result<plan::Conformance> {
    use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
    use kube::api::{DeleteParams, ListParams, PostParams};
    let ns = canary.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let selector = format!("{}={}", gates::jobs::CANARY_LABEL, canary.name_any());
    let existing = jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Read)?
        .items;
    for stale in existing
        .iter()
        .filter(|j| gates::jobs::is_stale(j, revision) && gates::jobs::owned_by(j, canary))
    {
        // Background propagation: the Job's pods go with it.
        match jobs
            .delete(&stale.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {
                info!(job = %stale.name_any(), "deleted the conformance test of an older revision")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::Write("Job", stale.name_any(), e)),
        }
    }
    let mut states = Vec::new();
    for test in canary
        .spec
        .analysis
        .conformance_tests
        .iter()
        .filter(|t| t.runs(run.when()))
    {
        let desired = gates::jobs::desired(canary, test, revision, run);
        let name = desired.name_any();
        let job = match existing.iter().find(|j| j.name_any() == name) {
            Some(job) => job.clone(),
            None => match jobs.create(&PostParams::default(), &desired).await {
                Ok(job) => {
                    info!(job = %name, test = %test.name, run = %run.name(), "conformance test started");
                    job
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    jobs.get(&name).await.map_err(Error::Read)?
                }
                Err(e) => return Err(Error::Write("Job", name, e)),
            },
        };
        let mut state = gates::jobs::state(&job, &[]);
        if matches!(state, gates::jobs::TestState::Failed(_)) {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let selector = format!("batch.kubernetes.io/job-name={name}");
            let pods = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::Read)?
                .items;
            state = gates::jobs::state(&job, &pods);
        }
        states.push((test.name.clone(), state));
    }
    Ok(gates::jobs::outcome(&states))
}

/// Calls the gate, check and rollback webhooks `needs` asked for, all at once.
pub(super) async fn call_webhooks(canary: &Canary, needs: plan::WebhookNeeds) -> plan::Webhooks {
    let kinds = needs.kinds();
    let answers = futures::future::join_all(
        kinds
            .iter()
            .map(|kind| webhooks::call_all(canary, *kind, CanaryPhase::Progressing)),
    )
    .await;
    let mut result = plan::Webhooks::default();
    for (kind, calls) in kinds.into_iter().zip(answers) {
        match kind {
            WebhookType::ConfirmRollout => result.confirm_rollout = Some(gates::all_passed(&calls)),
            WebhookType::PreRollout => result.pre_rollout = Some(gates::all_passed(&calls)),
            WebhookType::ConfirmTrafficIncrease => {
                result.confirm_traffic_increase = Some(gates::all_passed(&calls))
            }
            WebhookType::ConfirmPromotion => {
                result.confirm_promotion = Some(gates::all_passed(&calls))
            }
            WebhookType::Rollback => result.rollback = gates::rollback_requested(&calls),
            WebhookType::Rollout | WebhookType::PostRollout | WebhookType::Event => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_is_waited_for_a_window_and_the_time_prometheus_takes_to_fill_it() {
        let s = Duration::from_secs;
        assert_eq!(
            first_window(s(5)),
            s(10),
            "a short window gets the 5 s floor"
        );
        assert_eq!(first_window(s(60)), s(90), "a long one half of itself");
    }
}
