//! What serin last applied to each object it writes, so that a write is skipped only
//! when the cached object carries exactly what would be written.

use std::{collections::HashMap, sync::Mutex};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The annotation that carries the hash of what serin last applied to an object.
pub const APPLIED_ANNOTATION: &str = "serin.dev/applied";

/// What this process last applied to an object.
#[derive(Clone, Debug, PartialEq)]
enum Record {
    /// A write was sent and its outcome is unknown (it failed, or is in flight): the
    /// object may hold it or not, so the cache decides nothing until the next write.
    Unknown,
    /// The write of `hash` succeeded and left the object at `resource_version`.
    Applied {
        hash: String,
        resource_version: Option<String>,
    },
}

/// `object` with [`APPLIED_ANNOTATION`] set to the hash of the rest of it, and the hash.
pub fn stamp(object: &Value) -> (Value, String) {
    let mut bare = object.clone();
    if let Some(m) = bare.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut)
    {
        a.remove(APPLIED_ANNOTATION);
        if a.is_empty() {
            m.remove("annotations");
        }
    }
    // serde_json's maps are ordered: the same object always serialises the same way.
    let digest = Sha256::digest(bare.to_string().as_bytes());
    let hash = hex::encode(digest)[..20].to_string();
    let mut stamped = bare;
    if !stamped["metadata"]["annotations"].is_object() {
        stamped["metadata"]["annotations"] = Value::Object(Default::default());
    }
    stamped["metadata"]["annotations"][APPLIED_ANNOTATION] = Value::String(hash.clone());
    (stamped, hash)
}

/// What this process applied, so that a cache that lags behind its own writes never
/// makes it skip a write.
#[derive(Default)]
pub(super) struct Applied(Mutex<HashMap<String, Record>>);

impl Applied {
    /// Whether writing `hash` would change nothing: the cached object carries `hash`,
    /// and, if this process wrote the object, its last write was that hash, it
    /// succeeded, and nobody has written the object since (same resourceVersion).
    pub(super) fn unchanged(
        &self,
        key: &str,
        hash: &str,
        live: Option<&kube::api::ObjectMeta>,
    ) -> bool {
        let Some(live) = live else { return false };
        if live.deletion_timestamp.is_some()
            || live
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPLIED_ANNOTATION))
                .map(String::as_str)
                != Some(hash)
        {
            return false;
        }
        match self.0.lock().expect("lock").get(key) {
            None => true,
            Some(Record::Unknown) => false,
            Some(Record::Applied {
                hash: applied,
                resource_version,
            }) => applied == hash && *resource_version == live.resource_version,
        }
    }

    pub(super) fn begin(&self, key: &str) {
        self.0
            .lock()
            .expect("lock")
            .insert(key.to_string(), Record::Unknown);
    }

    pub(super) fn done(&self, key: &str, hash: String, resource_version: Option<String>) {
        self.0.lock().expect("lock").insert(
            key.to_string(),
            Record::Applied {
                hash,
                resource_version,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use serde_json::json;

    fn live(hash: &str, rv: &str) -> ObjectMeta {
        ObjectMeta {
            annotations: Some([(APPLIED_ANNOTATION.to_string(), hash.to_string())].into()),
            resource_version: Some(rv.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn the_stamp_is_the_hash_of_the_object_without_it() {
        let object = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}});
        let (stamped, hash) = stamp(&object);
        assert_eq!(stamped["metadata"]["annotations"][APPLIED_ANNOTATION], hash);
        let (again, same) = stamp(&stamped);
        assert_eq!((again, same), (stamped, hash.clone()));
        let other = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 81}]}});
        assert_ne!(stamp(&other).1, hash);
    }

    #[test]
    fn an_object_is_written_unless_its_cached_copy_carries_the_same_hash() {
        let applied = Applied::default();
        assert!(!applied.unchanged("k", "h1", None), "absent: written");
        assert!(!applied.unchanged("k", "h1", Some(&live("h0", "1"))));
        // After a restart, the annotation alone says the object holds it.
        assert!(applied.unchanged("k", "h1", Some(&live("h1", "1"))));
        let mut deleting = live("h1", "1");
        deleting.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        assert!(!applied.unchanged("k", "h1", Some(&deleting)));
    }

    #[test]
    fn a_cache_that_lags_behind_this_process_writes_never_skips_a_write() {
        let applied = Applied::default();
        // h0 is cached; this process writes h1, and the cache has not seen it yet.
        applied.begin("k");
        applied.done("k", "h1".into(), Some("2".into()));
        // Going back to h0 must be written although the (stale) cache shows h0.
        assert!(!applied.unchanged("k", "h0", Some(&live("h0", "1"))));
        // Once the cache shows this process's write, it is not repeated.
        assert!(applied.unchanged("k", "h1", Some(&live("h1", "2"))));
        // Somebody else wrote the object since: written again.
        assert!(!applied.unchanged("k", "h1", Some(&live("h1", "3"))));
    }

    #[test]
    fn a_write_whose_outcome_is_unknown_is_never_skipped() {
        let applied = Applied::default();
        applied.begin("k");
        assert!(!applied.unchanged("k", "h1", Some(&live("h1", "1"))));
    }
}
