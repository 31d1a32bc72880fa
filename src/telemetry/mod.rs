//! The controller's own telemetry: Prometheus series compatible with Flagger's
//! (`metrics`).
//!
//! `docs/metrics.md` lists every series, its labels and the Flagger series it replaces.

pub mod metrics;

pub use metrics::{AnalysisStatus, DeploymentStrategy, Metrics, Outcome, ReconcileTimer};
