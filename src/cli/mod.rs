//! The command line for people: list Canaries, show and follow one, approve a gate and
//! abort a release. The same binary works as a kubectl plugin when installed as
//! `kubectl-serin`. What is printed and which annotation is written are pure functions
//! of the Canary (tested below); `commands` does the reading and writing.

pub mod commands;

use crate::api::{Canary, CanaryPhase, canary::annotations};

/// A gate a person can open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Gate {
    Start,
    Traffic,
    Promotion,
}

fn status(canary: &Canary) -> crate::api::CanaryStatus {
    canary.status.clone().unwrap_or_default()
}

/// The revision under analysis, shortened for tables.
fn short(revision: Option<&str>) -> String {
    revision
        .map(|r| r.chars().take(12).collect())
        .unwrap_or_else(|| "-".into())
}

/// What the Canary waits for, as a person reads it: the command that opens the gate, or
/// the webhook that holds it.
pub fn waits_for(canary: &Canary) -> String {
    let s = status(canary);
    let name = canary.metadata.name.as_deref().unwrap_or_default();
    let message = s.message.clone().unwrap_or_default();
    let hooks = message.contains("webhooks");
    match s.phase {
        CanaryPhase::Waiting if hooks => "confirm-rollout webhook".into(),
        CanaryPhase::Waiting => format!("serin approve {name} --gate start"),
        CanaryPhase::WaitingPromotion if hooks => "confirm-promotion webhook".into(),
        CanaryPhase::WaitingPromotion => format!("serin approve {name} --gate promotion"),
        CanaryPhase::Progressing if message.contains("confirm-traffic-increase") => {
            "confirm-traffic-increase webhook".into()
        }
        CanaryPhase::Progressing if message.contains("approve-traffic-increase") => {
            format!("serin approve {name} --gate traffic")
        }
        _ => "-".into(),
    }
}

/// The header of `serin list`.
pub fn list_header(all_namespaces: bool) -> String {
    let row = format!(
        "{:<20} {:<17} {:>6} {:<13} {}",
        "NAME", "PHASE", "WEIGHT", "REVISION", "WAITING FOR"
    );
    if all_namespaces {
        format!("{:<16} {row}", "NAMESPACE")
    } else {
        row
    }
}

/// One line of `serin list`.
pub fn list_line(canary: &Canary, all_namespaces: bool) -> String {
    let s = status(canary);
    let row = format!(
        "{:<20} {:<17} {:>5}% {:<13} {}",
        canary.metadata.name.as_deref().unwrap_or_default(),
        s.phase.as_str(),
        s.canary_weight,
        short(s.last_applied_spec.as_deref()),
        waits_for(canary)
    );
    if all_namespaces {
        format!(
            "{:<16} {row}",
            canary.metadata.namespace.as_deref().unwrap_or_default()
        )
    } else {
        row
    }
}

/// A bar of the weight toward `maxWeight`, for terminals.
pub fn progress_bar(weight: i32, max: u32, width: usize) -> String {
    let max = max.max(1) as f64;
    let filled = ((f64::from(weight.max(0)) / max) * width as f64).round() as usize;
    let filled = filled.min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// The lines of `serin status`: phase, weight, checks, revision and gates. With `bar`,
/// the weight is drawn toward `maxWeight`.
pub fn status_lines(canary: &Canary, bar: bool) -> Vec<String> {
    let s = status(canary);
    let max = canary.spec.analysis.max_weight();
    let weight = if bar {
        format!(
            "{} {}% of {max}%",
            progress_bar(s.canary_weight, max, 20),
            s.canary_weight
        )
    } else {
        format!("{}% (max {max}%)", s.canary_weight)
    };
    let approvals = canary.spec.approvals();
    let mut gates: Vec<String> = [
        (approvals.start, "start (manual)"),
        (approvals.traffic_increase, "traffic (manual)"),
        (approvals.promotion, "promotion (manual)"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, g)| g.to_string())
    .collect();
    for hook in &canary.spec.analysis.webhooks {
        let kind = serde_json::to_value(hook.webhook_type())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        gates.push(format!("{} ({kind} webhook)", hook.name));
    }
    vec![
        format!(
            "canary:    {}/{}",
            canary.metadata.namespace.as_deref().unwrap_or_default(),
            canary.metadata.name.as_deref().unwrap_or_default()
        ),
        format!("phase:     {}", s.phase),
        format!("weight:    {weight}"),
        format!(
            "checks:    {} failed / threshold {}, {} marginal",
            s.failed_checks,
            canary.spec.analysis.threshold(),
            s.marginal_checks
        ),
        format!(
            "revision:  {}",
            s.last_applied_spec.as_deref().unwrap_or("-")
        ),
        format!(
            "promoted:  {}",
            s.last_promoted_spec.as_deref().unwrap_or("-")
        ),
        format!(
            "gates:     {}",
            if gates.is_empty() {
                "-".to_string()
            } else {
                gates.join(", ")
            }
        ),
        format!("waiting:   {}", waits_for(canary)),
        format!("message:   {}", s.message.as_deref().unwrap_or("-")),
    ]
}

/// The lines of `serin history`: the last releases, newest first.
pub fn history_lines(canary: &Canary) -> Vec<String> {
    let s = status(canary);
    let images: Vec<String> = s
        .history
        .iter()
        .map(|r| {
            if r.images.is_empty() {
                "-".to_string()
            } else {
                r.images.join(",")
            }
        })
        .collect();
    let width = images.iter().map(String::len).max().unwrap_or(0).max(6);
    let mut lines = vec![format!(
        "{:<20} {:<13} {:<9} {:<width$} {}",
        "WHEN", "REVISION", "OUTCOME", "IMAGES", "WHY"
    )];
    for (r, images) in s.history.iter().zip(&images) {
        let when = r.time.0.strftime("%Y-%m-%d %H:%M:%S").to_string();
        lines.push(format!(
            "{when:<20} {:<13} {:<9} {images:<width$} {}",
            short(Some(&r.revision)),
            r.outcome.as_str(),
            r.reason.as_deref().unwrap_or("-")
        ));
    }
    lines
}

/// The annotation `serin approve` writes: the gate's key and the current revision (with
/// the current weight for a traffic increase). A revision named by the user that is no
/// longer the one under analysis is refused.
pub fn approval(
    canary: &Canary,
    gate: Gate,
    revision: Option<&str>,
) -> Result<(&'static str, String), String> {
    let s = status(canary);
    let current = current_revision(canary, revision)?;
    Ok(match gate {
        Gate::Start => (annotations::APPROVE_START, current),
        Gate::Promotion => (annotations::APPROVE_PROMOTION, current),
        Gate::Traffic => (
            annotations::APPROVE_TRAFFIC_INCREASE,
            format!("{current}@{}", s.canary_weight),
        ),
    })
}

/// The annotation `serin abort` writes.
pub fn abort(canary: &Canary, revision: Option<&str>) -> Result<(&'static str, String), String> {
    Ok((annotations::ABORT, current_revision(canary, revision)?))
}

fn current_revision(canary: &Canary, revision: Option<&str>) -> Result<String, String> {
    let s = status(canary);
    let name = canary.metadata.name.as_deref().unwrap_or_default();
    let in_flight = matches!(
        s.phase,
        CanaryPhase::Waiting | CanaryPhase::Progressing | CanaryPhase::WaitingPromotion
    );
    let Some(current) = s.last_applied_spec.filter(|_| in_flight) else {
        return Err(format!(
            "{name} has no release in flight (phase {}): nothing to approve or abort",
            s.phase
        ));
    };
    match revision {
        Some(r) if r != current => Err(format!(
            "revision {r} is no longer current: {name} now analyses {current}; nothing was written"
        )),
        _ => Ok(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CanaryStatus;

    fn at(phase: CanaryPhase, weight: i32, message: &str) -> Canary {
        let mut c = Canary::test();
        c.status = Some(CanaryStatus {
            phase,
            canary_weight: weight,
            last_applied_spec: Some("abc123def4567890".into()),
            message: Some(message.into()),
            ..Default::default()
        });
        c
    }

    #[test]
    fn approving_writes_the_current_revision_and_refuses_an_older_one() {
        let c = at(CanaryPhase::WaitingPromotion, 50, "waiting for approval");
        assert_eq!(
            approval(&c, Gate::Promotion, None).unwrap(),
            (
                "serin.dev/approve-promotion",
                "abc123def4567890".to_string()
            )
        );
        assert_eq!(
            approval(&c, Gate::Traffic, None).unwrap().1,
            "abc123def4567890@50"
        );
        let refused = approval(&c, Gate::Promotion, Some("0ld")).unwrap_err();
        assert!(refused.contains("no longer current"), "{refused}");
        assert!(approval(&c, Gate::Promotion, Some("abc123def4567890")).is_ok());
        let settled = at(CanaryPhase::Succeeded, 0, "");
        assert!(approval(&settled, Gate::Start, None).is_err());
        assert_eq!(
            abort(&c, None).unwrap(),
            ("serin.dev/abort", "abc123def4567890".to_string())
        );
    }

    #[test]
    fn a_list_line_says_what_the_canary_waits_for() {
        let c = at(
            CanaryPhase::WaitingPromotion,
            50,
            "waiting for approval to promote",
        );
        let line = list_line(&c, false);
        assert!(line.starts_with("podinfo"), "{line}");
        assert!(
            line.contains("WaitingPromotion") && line.contains("50%"),
            "{line}"
        );
        assert!(line.contains("abc123def456 "), "{line}");
        assert!(
            line.contains("serin approve podinfo --gate promotion"),
            "{line}"
        );
        let hooked = at(
            CanaryPhase::Waiting,
            0,
            "waiting for the confirm-rollout webhooks to start x: webhook g answered 403",
        );
        assert!(list_line(&hooked, true).starts_with("test "));
        assert!(list_line(&hooked, true).ends_with("confirm-rollout webhook"));
    }

    #[test]
    fn history_shows_each_release_with_its_outcome_images_and_reason() {
        let mut c = at(CanaryPhase::Succeeded, 0, "");
        c.status.as_mut().unwrap().history = vec![crate::api::Release {
            revision: "abc123def4567890".into(),
            images: vec!["podinfo:6.0.1".into()],
            outcome: CanaryPhase::Failed,
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1_735_689_600).unwrap(),
            ),
            reason: Some("failed checks threshold reached 1/1".into()),
        }];
        let lines = history_lines(&c);
        assert!(lines[0].starts_with("WHEN"));
        assert!(
            lines[1].starts_with("2025-01-01 00:00:00  abc123def456  Failed"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("podinfo:6.0.1") && lines[1].ends_with("reached 1/1"));
    }

    #[test]
    fn status_draws_the_weight_toward_max_weight_on_a_terminal_only() {
        let c = at(CanaryPhase::Progressing, 25, "analysing");
        let plain = status_lines(&c, false);
        assert!(
            plain.contains(&"weight:    25% (max 100%)".to_string()),
            "{plain:?}"
        );
        let drawn = status_lines(&c, true);
        assert!(
            drawn.contains(&"weight:    [#####---------------] 25% of 100%".to_string()),
            "{drawn:?}"
        );
        assert_eq!(progress_bar(80, 50, 10), "[##########]");
    }
}
