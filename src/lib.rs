//! serin: a progressive-delivery controller for Kubernetes.
//!
//! The crate is split by concern: `api` holds the CRD types, `analysis` the metric
//! providers and the statistics, `bench` the decision benchmark.
#![forbid(unsafe_code)]

pub mod analysis;
pub mod api;
pub mod bench;
pub mod cli;
pub mod controller;
pub mod gates;
pub mod notify;
pub mod rollout;
pub mod router;
pub mod sim;
pub mod telemetry;
pub mod workloads;

#[cfg(test)]
mod fuzz_tests;
