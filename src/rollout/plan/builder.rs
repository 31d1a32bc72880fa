//! The plan under construction: the status, the writes and the events one reconcile
//! decides, with the steps every phase shares (start, restart, roll back, finish).

use super::*;

/// One reconcile's plan as the phases build it; [`Builder::finish`] makes it a [`Plan`].
pub(super) struct Builder<'a> {
    pub(super) input: &'a Input<'a>,
    pub(super) status: CanaryStatus,
    pub(super) primary: PrimaryAction,
    pub(super) target: TargetScale,
    pub(super) traffic: Option<Traffic>,
    pub(super) events: Vec<Event>,
    pub(super) post_rollout: Option<CanaryPhase>,
    pub(super) requeue: Duration,
}

impl Builder<'_> {
    pub(super) fn event(
        &mut self,
        severity: Severity,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.events.push(Event {
            reason,
            severity,
            revision: self
                .input
                .observed
                .target
                .as_ref()
                .map(|t| t.revision.clone()),
            weight: 0,
            metric: None,
            value: None,
            message: message.into(),
            key: String::new(),
            muted: false,
        });
    }

    /// Mutes the notification of the last event when the webhook that closed a gate asks
    /// for it (`muteAlert`); the Kubernetes Event is still published.
    pub(super) fn mute_if_asked(&mut self, why: Option<&Finding>) {
        let Some(name) = why.and_then(|f| f.metric.as_deref()) else {
            return;
        };
        let muted = self
            .input
            .canary
            .spec
            .analysis
            .webhooks
            .iter()
            .any(|w| w.name == name && w.mute_alert);
        if let Some(e) = self.events.last_mut() {
            e.muted = muted;
        }
    }

    /// An event about a finding of the analysis: it names the metric and its value.
    pub(super) fn finding(
        &mut self,
        severity: Severity,
        reason: &'static str,
        message: String,
        f: &Finding,
    ) {
        self.event(severity, reason, message);
        if let Some(e) = self.events.last_mut() {
            e.metric = f.metric.clone();
            e.value = f.value;
        }
    }

    pub(super) fn phase(&mut self, phase: CanaryPhase, message: impl Into<String>) {
        if self.status.phase != phase {
            self.status.phase = phase;
            self.status.last_transition_time = Some(Time(self.input.now));
        }
        self.status.message = Some(message.into());
    }

    pub(super) fn interval(&self) -> Duration {
        self.input.canary.spec.analysis.interval()
    }

    /// Starts (or restarts) the analysis of `revision` from weight 0.
    pub(super) fn start(&mut self, revision: &str) {
        let skip = self.input.canary.spec.skip_analysis;
        self.status.last_applied_spec = Some(revision.to_string());
        self.status.canary_weight = 0;
        self.status.failed_checks = 0;
        self.status.marginal_checks = 0;
        self.status.iterations = 0;
        self.status.analysis_start_time = Some(Time(self.input.now));
        self.status.last_analysis_time = None;
        if skip {
            self.event(
                Severity::Info,
                reasons::SKIPPED_ANALYSIS,
                format!("New revision {revision}: analysis skipped, promoting"),
            );
            self.primary = PrimaryAction::Promote;
            self.phase(
                CanaryPhase::Promoting,
                format!("promoting {revision} without analysis (skipAnalysis)"),
            );
            return;
        }
        if self.input.canary.spec.approvals().start && !self.input.gates.start_approved {
            self.event(Severity::Info, reasons::WAITING_APPROVAL, format!("New revision {revision} waits for approval to start (annotate serin.dev/approve-start={revision})"));
            self.phase(
                CanaryPhase::Waiting,
                format!(
                    "waiting for approval to start {revision} (serin approve {} --gate start)",
                    self.input
                        .canary
                        .metadata
                        .name
                        .as_deref()
                        .unwrap_or_default()
                ),
            );
            self.requeue = POLL;
            return;
        }
        if let Err(why) = webhook_gate(
            self.input.canary,
            &self.input.webhooks,
            WebhookType::ConfirmRollout,
        ) {
            let closer = why.clone();
            let why = closed_because(why, "confirm-rollout");
            self.event(
                Severity::Info,
                reasons::WAITING_APPROVAL,
                format!("New revision {revision} waits for its confirm-rollout webhooks: {why}"),
            );
            self.mute_if_asked(closer.as_ref());
            self.phase(
                CanaryPhase::Waiting,
                format!("waiting for the confirm-rollout webhooks to start {revision}: {why}"),
            );
            self.status.last_analysis_time = Some(Time(self.input.now));
            self.requeue = POLL;
            return;
        }
        self.target = TargetScale::Up;
        self.event(
            Severity::Info,
            reasons::NEW_REVISION,
            format!("New revision {revision} detected, starting canary analysis"),
        );
        self.phase(
            CanaryPhase::Progressing,
            format!("starting the canary {revision}"),
        );
        self.requeue = POLL;
    }

    /// A newer revision arrived while one was in flight: analyse it from weight 0.
    pub(super) fn restart(&mut self, revision: &str, during: &str) {
        self.event(
            Severity::Info,
            reasons::RESTARTED,
            format!("New revision {revision} during {during}, restarting from weight 0"),
        );
        self.start(revision);
    }

    /// Records a finished release in the bounded history, newest first.
    pub(super) fn remember(&mut self, revision: &str, outcome: CanaryPhase, reason: String) {
        let observed = &self.input.observed;
        let images = if observed.target.as_ref().map(|t| t.revision.as_str()) == Some(revision) {
            observed.images.clone()
        } else {
            Vec::new()
        };
        self.status.history.insert(
            0,
            crate::api::Release {
                revision: revision.to_string(),
                images,
                outcome,
                time: Time(self.input.now),
                reason: Some(reason),
            },
        );
        self.status.history.truncate(crate::api::HISTORY_LIMIT);
    }

    pub(super) fn rollback(&mut self, why: &Finding) {
        self.post_rollout = Some(CanaryPhase::Failed);
        if let Some(revision) = self.status.last_applied_spec.clone() {
            self.remember(&revision, CanaryPhase::Failed, why.message.clone());
        }
        self.status.canary_weight = 0;
        self.target = TargetScale::Down;
        self.finding(
            Severity::Error,
            reasons::ROLLED_BACK,
            format!("Canary rolled back: {why}"),
            why,
        );
        self.phase(CanaryPhase::Failed, why.to_string());
        self.requeue = self.interval().max(POLL);
    }

    pub(super) fn finish(self) -> Plan {
        let mut status = self.status;
        let input = self.input;
        let now = input.now;
        let generation = input.canary.metadata.generation;
        status.observed_generation = generation;
        conditions::set_for_phase(&mut status, now, generation);
        let traffic = self
            .traffic
            .unwrap_or_else(|| match &input.observed.target {
                // No route may point at a primary that does not exist.
                Some(_) if input.observed.primary.is_none() => Traffic::Prepare,
                Some(target) => Traffic::Route {
                    canary_weight: routed_weight(&status, target),
                },
                None => Traffic::Untouched,
            });
        let canary = input.canary;
        let identity = format!(
            "{}/{}/{}",
            canary.metadata.namespace.as_deref().unwrap_or_default(),
            canary.metadata.name.as_deref().unwrap_or_default(),
            canary.metadata.uid.as_deref().unwrap_or_default()
        );
        let events = self
            .events
            .into_iter()
            .map(|mut e| {
                e.weight = status.canary_weight;
                e.key = format!(
                    "{identity}/{}/{}/{}/w{}/f{}/m{}",
                    e.revision.as_deref().unwrap_or_default(),
                    e.reason,
                    status.phase,
                    status.canary_weight,
                    status.failed_checks,
                    status.marginal_checks
                );
                e
            })
            .collect();
        // Mirror only to a canary that is ready and runs the revision under analysis.
        let mirror = match &input.observed.target {
            Some(target)
                if input.observed.primary.is_some()
                    && target.ready.is_ready()
                    && status.last_applied_spec.as_deref() == Some(target.revision.as_str()) =>
            {
                mirrored(canary, &status, &traffic)
            }
            _ => None,
        };
        Plan {
            status,
            primary: self.primary,
            target: self.target,
            traffic,
            mirror,
            events,
            post_rollout: self.post_rollout,
            requeue: self.requeue,
        }
    }
}
