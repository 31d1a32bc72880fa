//! The rollout state machine (pure) and the status conditions it maintains.

pub mod conditions;
pub mod plan;

#[cfg(test)]
pub mod fixtures;
#[cfg(test)]
mod plan_tests;
