//! Rendering of metric queries: `{{ name }}`, `{{ namespace }}`, `{{ target }}`,
//! `{{ service }}`, `{{ interval }}` and `{{ variables.X }}`, as in Flagger's
//! MetricTemplates. An unknown variable is an error, never an empty string, so a typo
//! cannot turn a query into one that silently matches everything.

use std::collections::BTreeMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum TemplateError {
    #[error(
        "unknown variable `{{{{ {0} }}}}` in the query; known: name, namespace, target, service, interval, variables.<key> for the metric's templateVariables"
    )]
    UnknownVariable(String),
    #[error("unclosed `{{{{` in the query at byte {0}")]
    Unclosed(usize),
}

/// The values a query can refer to.
#[derive(Clone, Debug, Default)]
pub struct QueryVars {
    pub name: String,
    pub namespace: String,
    pub target: String,
    pub service: String,
    /// A PromQL range, e.g. `1m` or `30s`.
    pub interval: String,
    pub variables: BTreeMap<String, String>,
}

pub fn render(query: &str, vars: &QueryVars) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or(TemplateError::Unclosed(offset + start))?;
        let key = after[..end].trim();
        let value = match key {
            "name" => &vars.name,
            "namespace" => &vars.namespace,
            "target" => &vars.target,
            "service" => &vars.service,
            "interval" => &vars.interval,
            _ => key
                .strip_prefix("variables.")
                .and_then(|k| vars.variables.get(k))
                .ok_or_else(|| TemplateError::UnknownVariable(key.to_string()))?,
        };
        out.push_str(value);
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> QueryVars {
        QueryVars {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            interval: "1m".into(),
            variables: [("code".to_string(), "5..".to_string())].into(),
        }
    }

    #[test]
    fn every_known_variable_is_substituted_with_or_without_spaces() {
        let q = r#"rate(x{ns="{{ namespace }}",w="{{target}}",s="{{ service }}",c=~"{{ variables.code }}"}[{{ interval }}]) # {{name}}"#;
        assert_eq!(
            render(q, &vars()).unwrap(),
            r#"rate(x{ns="test",w="podinfo",s="podinfo",c=~"5.."}[1m]) # podinfo"#
        );
    }

    #[test]
    fn an_unknown_variable_is_an_error_not_an_empty_string() {
        assert_eq!(
            render("x{ns=\"{{ namspace }}\"}", &vars()),
            Err(TemplateError::UnknownVariable("namspace".into()))
        );
        assert_eq!(
            render("{{ variables.missing }}", &vars()),
            Err(TemplateError::UnknownVariable("variables.missing".into()))
        );
    }

    #[test]
    fn an_unclosed_brace_is_reported() {
        assert_eq!(
            render("up {{ namespace", &vars()),
            Err(TemplateError::Unclosed(3))
        );
    }

    #[test]
    fn a_query_without_variables_is_unchanged() {
        assert_eq!(render("sum(up)", &vars()).unwrap(), "sum(up)");
    }
}
