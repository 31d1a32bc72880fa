//! Metric analysis: providers that fetch samples and the judgements made on them.

pub mod builtin;
pub mod checks;
pub mod compare;
pub mod counts;
pub mod prometheus;
pub mod stats;
pub mod telemetry;
pub mod template;
