//! The rollout state machine (pure), the verdict rules of an analysis round, and the
//! status conditions they maintain.

pub mod conditions;
pub mod plan;
pub mod routes;
pub mod verdict;

#[cfg(test)]
mod ab_tests;
#[cfg(test)]
mod blue_green_tests;
#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
pub mod fixtures;
#[cfg(test)]
mod mirror_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod safety_tests;
#[cfg(test)]
mod sequential_tests;
#[cfg(test)]
mod webhook_tests;
