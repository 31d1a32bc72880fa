//! Workloads: the target Deployment, the primary serin derives from it, the Services in
//! front of them, and the revision that identifies a release.

pub mod configs;
pub mod deployment;
pub mod revision;
