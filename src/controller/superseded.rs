//! The Canary versions serin has written over, so that a reconcile handed an object the
//! watch cache has not replaced yet does nothing (in particular calls no webhook) and
//! waits for the newer one. The status write is conditioned on the version read, so a
//! stale reconcile could never record a decision; this keeps it from causing side
//! effects that the refused write would then forget (a `pre-rollout` call that counts for
//! nothing, and is made again).
//!
//! Versions are compared for equality only (they are opaque), and kept per Canary until
//! a reconcile sees a version that is not among them: the cache moves forward only, so
//! the versions written over before it never come back.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use kube::ResourceExt;

use crate::api::Canary;

/// At most this many versions are kept per Canary (writes the cache has not caught up with).
const KEPT: usize = 8;

#[derive(Debug, Default)]
pub struct Superseded {
    /// Canary uid → the versions written over, newest last.
    versions: Mutex<HashMap<String, Vec<String>>>,
}

impl Superseded {
    /// A status write succeeded on `canary`: its version is superseded.
    pub fn record(&self, canary: &Canary) {
        let (Some(uid), Some(version)) = (canary.uid(), canary.resource_version()) else {
            return;
        };
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = versions.entry(uid).or_default();
        if kept.len() == KEPT {
            kept.remove(0);
        }
        kept.push(version);
    }

    /// Whether serin has written over this version of `canary` (the cache is behind).
    /// A version that is not superseded shows the cache has caught up: the older ones
    /// are forgotten.
    pub fn is_stale(&self, canary: &Canary) -> bool {
        let (Some(uid), Some(version)) = (canary.uid(), canary.resource_version()) else {
            return false;
        };
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        match versions.get(&uid) {
            Some(kept) if kept.contains(&version) => true,
            Some(_) => {
                versions.remove(&uid);
                false
            }
            None => false,
        }
    }

    /// The Canary is gone.
    pub fn forget(&self, canary: &Canary) {
        if let Some(uid) = canary.uid() {
            self.versions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&uid);
        }
    }

    #[cfg(test)]
    fn canaries(&self) -> usize {
        self.versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(uid: &str, version: &str) -> Canary {
        let mut c = Canary::test();
        c.metadata.uid = Some(uid.to_string());
        c.metadata.resource_version = Some(version.to_string());
        c
    }

    #[test]
    fn a_version_serin_wrote_over_is_stale_until_the_cache_shows_a_newer_one() {
        let superseded = Superseded::default();
        assert!(!superseded.is_stale(&canary("a", "10")));
        superseded.record(&canary("a", "10"));
        superseded.record(&canary("a", "11"));
        assert!(superseded.is_stale(&canary("a", "10")));
        assert!(superseded.is_stale(&canary("a", "11")));
        assert!(
            !superseded.is_stale(&canary("b", "10")),
            "another Canary's versions are its own"
        );
        assert!(!superseded.is_stale(&canary("a", "12")));
        assert_eq!(superseded.canaries(), 0, "caught up: nothing kept");
    }

    #[test]
    fn a_deleted_canary_leaves_nothing_behind() {
        let superseded = Superseded::default();
        superseded.record(&canary("a", "10"));
        superseded.forget(&canary("a", "10"));
        assert!(!superseded.is_stale(&canary("a", "10")));
        assert_eq!(superseded.canaries(), 0);
    }

    #[test]
    fn only_the_latest_writes_are_kept() {
        let superseded = Superseded::default();
        for v in 0..20 {
            superseded.record(&canary("a", &v.to_string()));
        }
        assert!(superseded.is_stale(&canary("a", "19")));
        assert!(superseded.is_stale(&canary("a", "12")));
        assert!(!superseded.is_stale(&canary("a", "11")));
    }
}
