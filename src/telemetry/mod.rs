//! The controller's own telemetry: Prometheus series compatible with Flagger's
//! (`metrics`), and the HTTP server for `/metrics`, `/healthz` and `/readyz` (`server`).
//!
//! `docs/metrics.md` lists every series, its labels and the Flagger series it replaces.

pub mod metrics;
pub mod server;

pub use metrics::{AnalysisStatus, DeploymentStrategy, Metrics, Outcome, ReconcileTimer};
pub use server::{Readiness, Server};
