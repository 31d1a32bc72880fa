//! Statistical comparison of canary and primary samples.
//!
//! [`mann_whitney`] holds the rank test and the Hodges-Lehmann interval.

pub mod mann_whitney;

pub use mann_whitney::{NanStrategy, StatsError};
