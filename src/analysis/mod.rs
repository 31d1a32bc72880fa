//! Metric analysis: providers that fetch samples and the judgements made on them.

pub mod stats;
