//! Hand-written schema fragments for fields whose Rust type does not say enough.
//!
//! Mesh-specific settings (Istio traffic policies, retries, match rules) are passed through to
//! the mesh unchanged, so their schema only needs to keep them; durations get a CEL rule so the
//! apiserver explains a bad value in words instead of quoting a regular expression.

use schemars::{Schema, SchemaGenerator, json_schema};

use super::duration::DURATION_PATTERN;

/// Longest duration string accepted; it bounds the cost of the CEL rule on each duration.
const DURATION_MAX_LENGTH: u32 = 32;

/// An object kept as written: its content belongs to the mesh, not to serin.
pub(crate) fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A list of objects kept as written (Istio `HTTPMatchRequest`s and the like).
pub(crate) fn free_form_object_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// A Go-style duration string (`500ms`, `30s`, `1m30s`), checked at admission.
pub(crate) fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": DURATION_MAX_LENGTH,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches('{}')", DURATION_PATTERN.replace('\\', "\\\\")),
            "message": "must be a duration such as 500ms, 30s, 1m or 1m30s (units: ns, us, ms, s, m, h)",
        }],
    })
}

/// Removes an enum type's own description, so an optional field of that type keeps the
/// field's description in `kubectl explain` (kube hoists the type's over the field's).
pub(crate) fn drop_description(schema: &mut Schema) {
    schema.remove("description");
}

/// Removes the `default`s that `#[serde(default)]` puts into the schema: serin fills in
/// status defaults when it reads the object, so the apiserver need not.
pub(crate) fn drop_property_defaults(schema: &mut Schema) {
    if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        for property in properties.values_mut() {
            if let Some(property) = property.as_object_mut() {
                property.remove("default");
            }
        }
    }
}
