//! What the Istio and Gateway API routers share about the strategies beyond a weighted
//! split, as Flagger builds them: the A/B conditions (`analysis.match` merged with
//! `service.match`) and the session affinity cookies.
//!
//! Flagger draws a random cookie value per release and keeps it in the Canary's
//! status; serin derives it from the revision under analysis (`status.lastAppliedSpec`),
//! which is just as unique per release and keeps the routers pure.

use serde_json::{Value, json};

use crate::api::{Canary, SessionAffinity};

/// The request header that carries cookies.
pub const COOKIE_HEADER: &str = "Cookie";
/// The response header that sets one.
pub const SET_COOKIE_HEADER: &str = "Set-Cookie";

/// The A/B conditions as Istio HTTPMatchRequests: each of `analysis.match` combined with
/// each of `service.match` (the analysis' headers and source labels over the service's
/// other conditions), as Flagger's `mergeMatchConditions`.
pub fn ab_matches(canary: &Canary) -> Vec<Value> {
    merge(
        &canary.spec.analysis.match_,
        &canary.spec.service.match_,
        &["headers", "sourceLabels", "queryParams"],
    )
}

/// `conditions` (which set the fields in `keys`) over each of `defaults`.
pub fn merge(conditions: &[Value], defaults: &[Value], keys: &[&str]) -> Vec<Value> {
    if defaults.is_empty() {
        return conditions.to_vec();
    }
    let mut merged = Vec::new();
    for c in conditions {
        for d in defaults {
            let mut m = d.clone();
            for key in keys {
                if let Some(v) = c.get(*key) {
                    m[*key] = v.clone();
                }
            }
            merged.push(m);
        }
    }
    merged
}

/// A session affinity cookie of the release under analysis: `name=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
}

impl Cookie {
    pub fn pair(&self) -> String {
        format!("{}={}", self.name, self.value)
    }

    /// The `Cookie` request header pattern of a request carrying it (as Flagger: the
    /// name, then the value, anywhere in the header).
    pub fn regex(&self) -> String {
        format!(".*{}=.*{}.*", self.name, self.value)
    }

    /// The `Set-Cookie` header that gives it to a user for `affinity.maxAge` seconds,
    /// with the attributes the Canary asks for (Flagger's `BuildCookie`).
    pub fn set(&self, affinity: &SessionAffinity) -> String {
        let mut out = format!("{}; Max-Age={}", self.pair(), affinity.max_age());
        if let Some(domain) = &affinity.domain {
            out.push_str(&format!("; Domain={domain}"));
        }
        if let Some(path) = &affinity.path {
            out.push_str(&format!("; Path={path}"));
        }
        for (on, attribute) in [
            (affinity.http_only, "HttpOnly"),
            (affinity.secure, "Secure"),
            (affinity.partitioned, "Partitioned"),
        ] {
            if on {
                out.push_str("; ");
                out.push_str(attribute);
            }
        }
        if let Some(same_site) = &affinity.same_site {
            out.push_str(&format!("; SameSite={same_site}"));
        }
        out
    }

    /// The `Set-Cookie` header that removes it.
    pub fn expire(&self) -> String {
        format!("{}; Max-Age=-1", self.pair())
    }
}

/// The session affinity of a Canary, with its cookies for the release under analysis.
pub struct Affinity<'a> {
    pub spec: &'a SessionAffinity,
    /// Pins a user who reached the canary to it.
    pub canary: Cookie,
    /// Pins a user who reached the primary to it (`primaryCookieName`).
    pub primary: Option<Cookie>,
}

/// The session affinity cookies of `canary`, when it asks for them and a release is
/// under analysis. A/B tests route by their conditions, not by cookies.
pub fn affinity(canary: &Canary) -> Option<Affinity<'_>> {
    let spec = canary.spec.analysis.session_affinity.as_ref()?;
    if !canary.spec.analysis.match_.is_empty() || spec.cookie_name.is_empty() {
        return None;
    }
    let revision = canary.status.as_ref()?.last_applied_spec.as_deref()?;
    let value: String = revision
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if value.is_empty() {
        return None;
    }
    Some(Affinity {
        spec,
        canary: Cookie {
            name: spec.cookie_name.clone(),
            value: value.clone(),
        },
        primary: spec
            .primary_cookie_name
            .as_ref()
            .filter(|n| !n.is_empty())
            .map(|name| Cookie {
                name: name.clone(),
                value,
            }),
    })
}

/// An Istio header-operations object with `Set-Cookie: value` added to the responses,
/// over `headers` (the route's `service.headers`, if any).
pub fn with_set_cookie(headers: Option<&Value>, value: &str) -> Value {
    let mut headers = headers.cloned().unwrap_or_else(|| json!({}));
    if !headers["response"].is_object() {
        headers["response"] = json!({});
    }
    if !headers["response"]["add"].is_object() {
        headers["response"]["add"] = json!({});
    }
    headers["response"]["add"][SET_COOKIE_HEADER] = json!(value);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_conditions_are_merged_over_each_service_condition() {
        let analysis = vec![json!({"headers": {"x-canary": {"exact": "insider"}}})];
        let service = vec![
            json!({"uri": {"prefix": "/api"}}),
            json!({"uri": {"prefix": "/v2"}, "headers": {"x-old": {"exact": "1"}}}),
        ];
        let merged = merge(&analysis, &service, &["headers"]);
        assert_eq!(
            merged,
            vec![
                json!({"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "insider"}}}),
                json!({"uri": {"prefix": "/v2"}, "headers": {"x-canary": {"exact": "insider"}}}),
            ]
        );
        assert_eq!(merge(&analysis, &[], &["headers"]), analysis);
    }

    #[test]
    fn the_cookie_carries_the_attributes_asked_for() {
        let cookie = Cookie {
            name: "canary".into(),
            value: "abc123".into(),
        };
        let affinity = SessionAffinity {
            cookie_name: "canary".into(),
            max_age: Some(60),
            path: Some("/".into()),
            http_only: true,
            same_site: Some("Lax".into()),
            ..Default::default()
        };
        assert_eq!(
            cookie.set(&affinity),
            "canary=abc123; Max-Age=60; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(cookie.expire(), "canary=abc123; Max-Age=-1");
        assert_eq!(cookie.regex(), ".*canary=.*abc123.*");
        let headers = with_set_cookie(
            Some(&json!({"request": {"set": {"x-env": "prod"}}})),
            "canary=abc123",
        );
        assert_eq!(
            headers,
            json!({"request": {"set": {"x-env": "prod"}}, "response": {"add": {"Set-Cookie": "canary=abc123"}}})
        );
    }
}
