//! Statistical comparison of canary and primary samples.
//!
//! [`mann_whitney`] holds the rank test and the Hodges-Lehmann interval, [`judge`] turns them
//! into Kayenta-style metric classifications and a Pass/Marginal/Fail score, and
//! [`sequential`] decides early from cumulative request counts. The maths and guarantees
//! are written down in `docs/statistics.md`.

pub mod judge;
pub mod mann_whitney;
pub mod sequential;

pub use judge::{
    Classification, CompareConfig, Direction, MetricVerdict, NoDataPolicy, Outcome, Score,
    ScoreThresholds, compare, score,
};
pub use mann_whitney::{NanStrategy, StatsError};
pub use sequential::{Counts, SequentialConfig, SequentialDecision, decide};
