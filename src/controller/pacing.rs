//! Progress messages at a bounded rate. While a canary or a promoted primary rolls out,
//! its readiness changes several times a second ("rollout not yet observed", "0 of 3
//! replicas updated", "2 of 3 available"...), and each change would be a status write.
//! A status change that is only such a message is written at most every
//! [`MESSAGE_EVERY`] per Canary; every decision (phase, weight, checks, anything but the
//! message) and every change that comes with an event is written at once. A held
//! message is written by the reconcile that follows, at most [`MESSAGE_EVERY`] after the
//! last status write.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use kube::ResourceExt;

use crate::api::{Canary, CanaryStatus};
use crate::rollout::plan::Plan;

/// The least time between two status writes of a Canary that differ only in the message.
pub const MESSAGE_EVERY: Duration = Duration::from_secs(5);

/// Whether `planned` differs from `current` in its message (and the conditions' copies
/// of it) and in nothing else.
pub fn only_message_changed(current: &CanaryStatus, planned: &CanaryStatus) -> bool {
    let bare = |status: &CanaryStatus| {
        let mut status = status.clone();
        status.message = None;
        for condition in &mut status.conditions {
            condition.message.clear();
        }
        status
    };
    current != planned && bare(current) == bare(planned)
}

/// When each Canary's status was last written by this process.
#[derive(Debug, Default)]
pub struct Pacing {
    written: Mutex<HashMap<String, Instant>>,
}

impl Pacing {
    /// The status of `canary` was written at `at`.
    pub fn wrote(&self, canary: &Canary, at: Instant) {
        if let Some(uid) = canary.uid() {
            self.lock().insert(uid, at);
        }
    }

    pub fn forget(&self, canary: &Canary) {
        if let Some(uid) = canary.uid() {
            self.lock().remove(&uid);
        }
    }

    /// How long the status `plan` holds must wait before it is written: `Some` only for
    /// a change of the message alone, without events, within [`MESSAGE_EVERY`] of this
    /// Canary's last status write.
    pub fn hold(&self, canary: &Canary, plan: &Plan, now: Instant) -> Option<Duration> {
        let current = canary.status.as_ref()?;
        if !plan.events.is_empty() || !only_message_changed(current, &plan.status) {
            return None;
        }
        let written = *self.lock().get(&canary.uid()?)?;
        MESSAGE_EVERY
            .checked_sub(now.saturating_duration_since(written))
            .filter(|wait| !wait.is_zero())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::api::ObjectMeta;

    use super::*;
    use crate::api::CanaryPhase;
    use crate::rollout::plan::{Event, PrimaryAction, Severity, TargetScale, Traffic};

    fn status(message: &str, weight: i32) -> CanaryStatus {
        CanaryStatus {
            phase: CanaryPhase::Progressing,
            canary_weight: weight,
            message: Some(message.into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "Progressing".into(),
                message: message.into(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: Some(1),
            }],
            ..Default::default()
        }
    }

    fn canary(current: CanaryStatus) -> Canary {
        let mut canary = Canary::new("podinfo", Default::default());
        canary.metadata = ObjectMeta {
            name: Some("podinfo".into()),
            uid: Some("u-1".into()),
            ..Default::default()
        };
        canary.status = Some(current);
        canary
    }

    fn plan(status: CanaryStatus) -> Plan {
        Plan {
            status,
            primary: PrimaryAction::Keep,
            target: TargetScale::Keep,
            traffic: Traffic::Untouched,
            events: Vec::new(),
            mirror: None,
            post_rollout: None,
            requeue: Duration::from_secs(1),
        }
    }

    fn an_event() -> Event {
        Event {
            reason: "Advanced",
            severity: Severity::Info,
            revision: None,
            weight: 0,
            metric: None,
            value: None,
            key: "k".into(),
            message: "podinfo is ready".into(),
            muted: false,
        }
    }

    #[test]
    fn a_rollouts_progress_is_written_at_most_every_five_seconds() {
        let pacing = Pacing::default();
        let c = canary(status("podinfo rollout: 0 of 3 replicas updated", 0));
        let t0 = Instant::now();
        let next = plan(status("podinfo rollout: 1 of 3 replicas updated", 0));
        assert_eq!(
            pacing.hold(&c, &next, t0),
            None,
            "no write recorded yet: written at once"
        );
        pacing.wrote(&c, t0);
        assert_eq!(
            pacing.hold(&c, &next, t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(pacing.hold(&c, &next, t0 + MESSAGE_EVERY), None);
    }

    #[test]
    fn a_decision_or_an_event_is_written_at_once() {
        let pacing = Pacing::default();
        let c = canary(status("podinfo: 2 of 3 replicas available", 0));
        let t0 = Instant::now();
        pacing.wrote(&c, t0);
        let step = plan(status("analysing 6.0.1 at weight 10", 10));
        assert_eq!(pacing.hold(&c, &step, t0), None, "a new weight");
        let mut with_event = plan(status("podinfo: 3 of 3 replicas available", 0));
        with_event.events.push(an_event());
        assert_eq!(pacing.hold(&c, &with_event, t0), None, "an event");
        let unchanged = plan(status("podinfo: 2 of 3 replicas available", 0));
        assert_eq!(pacing.hold(&c, &unchanged, t0), None, "nothing to write");
        assert!(!only_message_changed(&unchanged.status, &unchanged.status));
    }
}
