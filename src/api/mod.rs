//! The custom resources serin serves (API group `serin.dev`, version `v1alpha1`).

pub mod duration;

pub use duration::DurationError;
