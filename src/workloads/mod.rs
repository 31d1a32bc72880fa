//! Workloads: the target Deployment, the primary serin derives from it, and the
//! revision that identifies a release.

pub mod revision;
