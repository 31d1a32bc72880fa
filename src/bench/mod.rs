//! Benchmarks run from the command line (`serin bench ...`).

pub mod decisions;
pub mod rng;
pub mod scale;
