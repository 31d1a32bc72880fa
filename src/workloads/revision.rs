//! Revision hashes: what identifies a release of the target.
//!
//! A revision is a hash of the target's pod template and of the data of the ConfigMaps
//! and Secrets it uses. It must not change when serin or Kubernetes is upgraded while
//! the workload stays the same (re-triggering every canary after an upgrade is a known
//! failure of other tools), so the hash is SHA-256 over a canonical JSON form: keys
//! sorted, nulls and empty collections dropped, and the values the API server fills in
//! by default removed when they equal that default. A field a future API server starts
//! defaulting therefore only matters if it is set to something other than its default.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Pod and container fields the API server defaults, with their default values.
const POD_DEFAULTS: &[(&str, &str)] = &[
    ("restartPolicy", "Always"),
    ("dnsPolicy", "ClusterFirst"),
    ("schedulerName", "default-scheduler"),
    ("terminationGracePeriodSeconds", "30"),
    ("enableServiceLinks", "true"),
];
const CONTAINER_DEFAULTS: &[(&str, &str)] = &[
    ("terminationMessagePath", "/dev/termination-log"),
    ("terminationMessagePolicy", "File"),
    ("imagePullPolicy", "IfNotPresent"),
    ("protocol", "TCP"),
];

/// Whether a JSON scalar is the default written as `text`.
fn equals(value: &Value, text: &str) -> bool {
    match value {
        Value::String(s) => s == text,
        Value::Number(n) => n.as_i64().is_some_and(|n| text.parse() == Ok(n)),
        Value::Bool(b) => text.parse() == Ok(*b),
        _ => false,
    }
}

/// Removes nulls, empty objects/arrays and the given defaults, recursively.
fn canonical(value: &Value, defaults: &[(&str, &str)]) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let is_default = defaults.iter().any(|(dk, dv)| dk == k && equals(v, dv));
                if is_default {
                    continue;
                }
                let nested_defaults = match k.as_str() {
                    "containers" | "initContainers" | "ephemeralContainers" | "ports" => {
                        CONTAINER_DEFAULTS
                    }
                    _ => defaults,
                };
                if let Some(v) = canonical(v, nested_defaults) {
                    out.insert(k.clone(), v);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let out: Vec<Value> = items
                .iter()
                .filter_map(|v| canonical(v, defaults))
                .collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        other => Some(other.clone()),
    }
}

/// The revision of a pod template plus the data of the tracked configs
/// (`kind/name -> data hash`), as 16 hex characters.
pub fn revision(
    pod_template: &Value,
    tracked_configs: &std::collections::BTreeMap<String, String>,
) -> String {
    let canonical = canonical(pod_template, POD_DEFAULTS).unwrap_or(Value::Null);
    let mut hasher = Sha256::new();
    // serde_json's Map is a BTreeMap here (no preserve_order), so keys are sorted.
    hasher.update(canonical.to_string().as_bytes());
    for (name, hash) in tracked_configs {
        hasher.update(b"\0");
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(hash.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

/// The hash of a ConfigMap's or Secret's data (keys sorted), as 16 hex characters.
pub fn data_hash<'a>(entries: impl IntoIterator<Item = (&'a String, &'a [u8])>) -> String {
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for (k, v) in entries {
        hasher.update(k.as_bytes());
        hasher.update(b"\0");
        hasher.update(v);
        hasher.update(b"\0");
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn as_written() -> Value {
        json!({
            "metadata": {"labels": {"app": "podinfo"}},
            "spec": {"containers": [{"name": "podinfo", "image": "podinfo:6.0.0", "ports": [{"containerPort": 9898}]}]}
        })
    }

    fn as_stored_by_the_api_server() -> Value {
        json!({
            "metadata": {"labels": {"app": "podinfo"}, "creationTimestamp": null},
            "spec": {
                "containers": [{
                    "name": "podinfo", "image": "podinfo:6.0.0",
                    "ports": [{"containerPort": 9898, "protocol": "TCP"}],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent"
                }],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "securityContext": {},
                "schedulerName": "default-scheduler"
            }
        })
    }

    #[test]
    fn server_side_defaults_do_not_change_the_revision() {
        let none = BTreeMap::new();
        assert_eq!(
            revision(&as_written(), &none),
            revision(&as_stored_by_the_api_server(), &none)
        );
    }

    #[test]
    fn a_new_image_is_a_new_revision() {
        let none = BTreeMap::new();
        let mut next = as_written();
        next["spec"]["containers"][0]["image"] = json!("podinfo:6.0.1");
        assert_ne!(revision(&as_written(), &none), revision(&next, &none));
    }

    #[test]
    fn a_value_other_than_the_default_is_part_of_the_revision() {
        let none = BTreeMap::new();
        let mut always = as_written();
        always["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        assert_ne!(revision(&as_written(), &none), revision(&always, &none));
    }

    #[test]
    fn a_config_change_is_a_new_revision() {
        let a: BTreeMap<_, _> =
            [("configmap/podinfo-config".to_string(), "aaaa".to_string())].into();
        let b: BTreeMap<_, _> =
            [("configmap/podinfo-config".to_string(), "bbbb".to_string())].into();
        assert_ne!(revision(&as_written(), &a), revision(&as_written(), &b));
    }

    /// Pinned: the revision of a fixed template must never change between serin
    /// releases, or every canary would restart on upgrade.
    #[test]
    fn the_revision_of_a_fixed_template_is_pinned() {
        assert_eq!(revision(&as_written(), &BTreeMap::new()), PINNED);
    }
    const PINNED: &str = "5b449f603179a000";

    #[test]
    fn data_hash_ignores_key_order() {
        let (k1, k2) = ("a".to_string(), "b".to_string());
        let one = data_hash([(&k1, b"1".as_slice()), (&k2, b"2".as_slice())]);
        let two = data_hash([(&k2, b"2".as_slice()), (&k1, b"1".as_slice())]);
        assert_eq!(one, two);
    }
}
