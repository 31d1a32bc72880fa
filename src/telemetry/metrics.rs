//! Prometheus series for canaries and the reconcile loop. The canary series keep Flagger's
//! names (with `serin_` in place of `flagger_`), labels and values, so Flagger dashboards
//! and alerts work after renaming the prefix; the reconcile series are serin's own.
//!
//! Flagger labels canary series by the *target workload's* name (`spec.targetRef.name`),
//! not the Canary's; every `name` argument here is that target name.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::CanaryPhase;

mod labels;
pub use labels::{AnalysisStatus, DeploymentStrategy, Outcome, status_value};
use labels::{
    CanaryLabels, ErrorLabels, InfoLabels, LaneLabels, MetricLabels, NamespaceLabels,
    OutcomeLabels, WorkloadLabels,
};

/// The prefix [`Metrics::new`] registers every series under.
pub const PREFIX: &str = "serin";

/// Flagger's buckets for `canary_duration_seconds` (client_golang's `DefBuckets`), kept
/// so that bucket-level queries written for Flagger still line up.
const ANALYSIS_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A reconcile reads from caches (milliseconds) but may wait on the API server or a
/// metric provider (seconds), so the buckets span both.
const RECONCILE_BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// An analysis tick is due every interval; under load it may run late by milliseconds
/// (a reconcile) to seconds (a saturated API server or Prometheus).
const LATENESS_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn analysis_histogram() -> Histogram {
    Histogram::new(ANALYSIS_BUCKETS)
}

fn lateness_histogram() -> Histogram {
    Histogram::new(LATENESS_BUCKETS)
}

#[derive(Debug)]
struct Inner {
    info: Family<InfoLabels, Gauge>,
    status: Family<CanaryLabels, FloatGauge>,
    weight: Family<WorkloadLabels, Gauge>,
    total: Family<NamespaceLabels, Gauge>,
    duration: HistogramFamily<CanaryLabels>,
    analysis: Family<MetricLabels, FloatGauge>,
    successes: Family<OutcomeLabels, Counter>,
    failures: Family<OutcomeLabels, Counter>,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    tick_lateness: Histogram,
    slot_wait: HistogramFamily<LaneLabels>,
    /// `Family` cannot remove by partial labels, so `forget` needs the metric names that
    /// were set for each canary.
    analysis_names: Mutex<HashMap<CanaryLabels, BTreeSet<String>>>,
}

/// The controller's metric handles. Cloning is cheap (one `Arc`) and every clone updates
/// the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    /// Handles that are not registered anywhere yet; see [`Metrics::register`].
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                info: Family::default(),
                status: Family::default(),
                weight: Family::default(),
                total: Family::default(),
                duration: Family::new_with_constructor(analysis_histogram),
                analysis: Family::default(),
                successes: Family::default(),
                failures: Family::default(),
                reconcile_duration: Histogram::new(RECONCILE_BUCKETS),
                reconcile_errors: Family::default(),
                tick_lateness: Histogram::new(LATENESS_BUCKETS),
                slot_wait: Family::new_with_constructor(lateness_histogram),
                analysis_names: Mutex::default(),
            }),
        }
    }
}

impl Metrics {
    /// Creates the handles and registers them under the `serin` prefix of `registry`,
    /// which should therefore be the root registry (one without a prefix of its own).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        metrics.register(registry.sub_registry_with_prefix(PREFIX));
        metrics
    }

    /// Registers every series in `registry` without adding a prefix, for callers that
    /// compose registries themselves.
    pub fn register(&self, registry: &mut Registry) {
        // prometheus-client appends `_total` to counter names and `.` to help texts.
        let m = &self.inner;
        registry.register(
            "info",
            "serin version and mesh provider information",
            m.info.clone(),
        );
        registry.register(
            "canary_duration_seconds",
            "Seconds spent performing canary analysis",
            m.duration.clone(),
        );
        registry.register(
            "canary_total",
            "Total number of canary object",
            m.total.clone(),
        );
        registry.register(
            "canary_status",
            "Last canary analysis result (0 running, 1 successful, 2 failed)",
            m.status.clone(),
        );
        registry.register(
            "canary_weight",
            "The virtual service destination weight current value",
            m.weight.clone(),
        );
        registry.register(
            "canary_metric_analysis",
            "Last canary analysis result per metric",
            m.analysis.clone(),
        );
        registry.register(
            "canary_successes",
            "Total number of canary successes",
            m.successes.clone(),
        );
        registry.register(
            "canary_failures",
            "Total number of canary failures",
            m.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Seconds spent in one reconcile of a Canary",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that returned an error, by error kind",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "analysis_tick_lateness_seconds",
            "Seconds an analysis tick ran after it was due (the last tick plus the interval)",
            m.tick_lateness.clone(),
        );
        registry.register(
            "reconcile_slot_wait_seconds",
            "Seconds a reconcile waited for one of the --concurrency slots, by lane (tick: a due analysis tick, served first; other)",
            m.slot_wait.clone(),
        );
    }

    /// Sets `serin_info{version, mesh_provider}` to 1 (Flagger's `flagger_info`).
    pub fn set_info(&self, version: &str, mesh_provider: &str) {
        self.inner
            .info
            .get_or_create(&InfoLabels {
                version: version.to_owned(),
                mesh_provider: mesh_provider.to_owned(),
            })
            .set(1);
    }

    /// Sets `serin_canary_status{name, namespace}`. Use [`status_value`] (or
    /// [`Metrics::set_phase`]) for Flagger's encoding: 0 running, 1 successful, 2 failed.
    pub fn set_status(&self, name: &str, namespace: &str, status: f64) {
        self.inner
            .status
            .get_or_create(&CanaryLabels::new(name, namespace))
            .set(status);
    }

    /// Sets `serin_canary_status` from a phase, with Flagger's mapping ([`status_value`]).
    pub fn set_phase(&self, name: &str, namespace: &str, phase: CanaryPhase) {
        self.set_status(name, namespace, status_value(phase));
    }

    /// Sets `serin_canary_weight{workload, namespace}` for both sides of the route, as
    /// Flagger does: `workload="<name>-primary"` gets `primary`, `workload="<name>"` gets
    /// `canary`.
    pub fn set_weight(&self, name: &str, namespace: &str, primary: i64, canary: i64) {
        let weight = |workload: String, value: i64| {
            self.inner
                .weight
                .get_or_create(&WorkloadLabels {
                    workload,
                    namespace: namespace.to_owned(),
                })
                .set(value);
        };
        weight(primary_workload(name), primary);
        weight(name.to_owned(), canary);
    }

    /// Observes `serin_canary_duration_seconds{name, namespace}`: the time one analysis
    /// step took (Flagger observes it once per analysis interval, not once per rollout).
    pub fn observe_duration(&self, name: &str, namespace: &str, seconds: f64) {
        self.inner
            .duration
            .get_or_create(&CanaryLabels::new(name, namespace))
            .observe(seconds);
    }

    /// Sets `serin_canary_total{namespace}` to the number of Canaries in `namespace`.
    ///
    /// A gauge set to a count, as in Flagger (which recounts its canary cache on every
    /// scheduling tick), not a counter: a reconcile runs many times per Canary, so
    /// incrementing per reconcile would overcount. Set 0 when the last Canary of a
    /// namespace goes, so the series does not keep a stale count.
    pub fn set_total(&self, namespace: &str, total: i64) {
        self.inner
            .total
            .get_or_create(&NamespaceLabels {
                namespace: namespace.to_owned(),
            })
            .set(total);
    }

    /// Sets `serin_canary_metric_analysis{name, namespace, metric}`: the last value of one
    /// analysis metric (`metric` is the metric's name in the Canary spec).
    pub fn set_metric_analysis(&self, name: &str, namespace: &str, metric: &str, value: f64) {
        let canary = CanaryLabels::new(name, namespace);
        self.inner
            .analysis
            .get_or_create(&MetricLabels {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                metric: metric.to_owned(),
            })
            .set(value);
        self.inner
            .analysis_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(canary)
            .or_default()
            .insert(metric.to_owned());
    }

    /// Counts a finished rollout in `serin_canary_successes_total` or
    /// `serin_canary_failures_total`, labelled `{name, namespace, deployment_strategy,
    /// analysis_status}` as in Flagger (which counts rollbacks as `completed` and
    /// promotions with `skipAnalysis` as `skipped`).
    pub fn inc_outcome(
        &self,
        name: &str,
        namespace: &str,
        strategy: DeploymentStrategy,
        analysis: AnalysisStatus,
        outcome: Outcome,
    ) {
        let family = match outcome {
            Outcome::Succeeded => &self.inner.successes,
            Outcome::Failed => &self.inner.failures,
        };
        family
            .get_or_create(&OutcomeLabels {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                deployment_strategy: strategy,
                analysis_status: analysis,
            })
            .inc();
    }

    /// Starts timing one reconcile; `serin_reconcile_duration_seconds` gets the elapsed
    /// time when the returned guard is dropped, on every return path.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self.inner.reconcile_duration.clone(),
            started: Instant::now(),
        }
    }

    /// Observes how late an analysis tick ran in
    /// `serin_analysis_tick_lateness_seconds`.
    pub fn observe_tick_lateness(&self, seconds: f64) {
        self.inner.tick_lateness.observe(seconds.max(0.0));
    }

    /// Observes how long a reconcile in `lane` (`tick` or `other`) waited for its slot in
    /// `serin_reconcile_slot_wait_seconds{lane}`.
    pub fn observe_slot_wait(&self, lane: &'static str, seconds: f64) {
        self.inner
            .slot_wait
            .get_or_create(&LaneLabels { lane })
            .observe(seconds);
    }

    /// Counts a failed reconcile in `serin_reconcile_errors_total{error}`. `error_label`
    /// should be an error's short, bounded label (the `label()` of the module's error
    /// enum), never its message.
    pub fn reconcile_failed(&self, error_label: &str) {
        self.inner
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                error: error_label.to_owned(),
            })
            .inc();
    }

    /// Removes every series of a deleted canary: status, both weights, duration, the
    /// metric analysis values and the outcome counters. `serin_canary_total` is per
    /// namespace and is left to [`Metrics::set_total`].
    pub fn forget(&self, name: &str, namespace: &str) {
        let m = &self.inner;
        let canary = CanaryLabels::new(name, namespace);
        m.status.remove(&canary);
        m.duration.remove(&canary);
        for workload in [primary_workload(name), name.to_owned()] {
            m.weight.remove(&WorkloadLabels {
                workload,
                namespace: namespace.to_owned(),
            });
        }
        let metric_names = m
            .analysis_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&canary)
            .unwrap_or_default();
        for metric in metric_names {
            m.analysis.remove(&MetricLabels {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                metric,
            });
        }
        for deployment_strategy in DeploymentStrategy::ALL {
            for analysis_status in AnalysisStatus::ALL {
                let labels = OutcomeLabels {
                    name: name.to_owned(),
                    namespace: namespace.to_owned(),
                    deployment_strategy,
                    analysis_status,
                };
                m.successes.remove(&labels);
                m.failures.remove(&labels);
            }
        }
    }
}

fn primary_workload(name: &str) -> String {
    format!("{name}-primary")
}

/// Times one reconcile; observes `serin_reconcile_duration_seconds` when dropped.
#[derive(Debug)]
#[must_use = "the reconcile is timed until this guard is dropped"]
pub struct ReconcileTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests;
