//! The rollout state machine: a pure function from the Canary (spec and status), what
//! was observed in the cluster, the gates, the analysis verdict and the time, to the
//! next status and the changes to make. It never sees a client, so every transition is
//! tested with plain values and a fake clock.
//!
//! Everything the machine remembers is in the status it returns: a controller killed at
//! any moment resumes from the last status it wrote.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{Canary, CanaryPhase, CanaryStatus};
use crate::rollout::conditions::{self, reasons};

/// Whether a workload can take traffic, and if not, why.
#[derive(Clone, Debug, PartialEq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// The target (the workload the user changes; it serves as the canary).
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Revision of its pod template and tracked configs.
    pub revision: String,
    /// Readiness once scaled up.
    pub ready: Readiness,
}

/// The primary serin derives from the target.
#[derive(Clone, Debug, PartialEq)]
pub struct Primary {
    /// Revision the primary runs (the annotation serin writes on it).
    pub revision: Option<String>,
    pub ready: Readiness,
}

/// What the cluster looks like now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// `None` when the target does not exist.
    pub target: Option<Target>,
    /// `None` before the primary is created.
    pub primary: Option<Primary>,
}

/// Approvals and aborts given for the target's current revision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Gates {
    pub start_approved: bool,
    pub traffic_increase_approved: bool,
    pub promotion_approved: bool,
    pub abort: bool,
}

/// The combined outcome of one analysis round.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    /// Neither pass nor fail (a marginal judge score): hold the weight.
    Hold(String),
    /// The checks that failed, as one readable message.
    Fail(String),
    /// The evidence already shows a regression: roll back now.
    Rollback(String),
}

/// What to do with the primary Deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryAction {
    Keep,
    /// Create the primary as a copy of the target (first initialization).
    Bootstrap,
    /// Copy the target's pod template and configs to the primary.
    Promote,
}

/// What to do with the target's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetScale {
    Keep,
    Up,
    Down,
}

/// An event to record on the Canary.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The decision of one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: CanaryStatus,
    pub primary: PrimaryAction,
    pub target: TargetScale,
    pub events: Vec<Event>,
    /// When to look again even if nothing changes.
    pub requeue: Duration,
}

/// Everything the plan is a function of.
pub struct Input<'a> {
    pub canary: &'a Canary,
    pub observed: &'a Observed,
    pub gates: Gates,
    /// The analysis verdict, present when the controller ran the checks because
    /// [`analysis_due`] said so.
    pub verdict: Option<Verdict>,
    pub now: Timestamp,
}

/// How often to look while waiting for something to become ready.
const POLL: Duration = Duration::from_secs(1);

fn since(t: &Option<Time>, now: Timestamp) -> Duration {
    t.as_ref()
        .map(|t| Duration::try_from(now.duration_since(t.0)).unwrap_or_default())
        .unwrap_or_default()
}

/// Whether the checks should run now: the rollout is progressing, traffic reaches the
/// canary, and an interval has passed since the last step.
pub fn analysis_due(canary: &Canary, now: Timestamp) -> bool {
    let Some(status) = &canary.status else {
        return false;
    };
    status.phase == CanaryPhase::Progressing
        && status.canary_weight > 0
        && since(&status.last_analysis_time, now) >= canary.spec.analysis.interval()
}

/// The next weight after `current`: the next of stepWeights, or current + stepWeight,
/// capped at maxWeight.
pub fn next_weight(canary: &Canary, current: u32) -> u32 {
    let analysis = &canary.spec.analysis;
    let max = analysis.max_weight();
    let next = if analysis.step_weights.is_empty() {
        let step = analysis
            .step_weight
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(max);
        current + step.max(1)
    } else {
        analysis
            .step_weights
            .iter()
            .filter_map(|w| u32::try_from(*w).ok())
            .find(|w| *w > current)
            .unwrap_or(max)
    };
    next.min(max)
}

struct Builder<'a> {
    input: &'a Input<'a>,
    status: CanaryStatus,
    primary: PrimaryAction,
    target: TargetScale,
    events: Vec<Event>,
    requeue: Duration,
}

impl Builder<'_> {
    fn event(&mut self, warning: bool, reason: &'static str, message: impl Into<String>) {
        self.events.push(Event {
            warning,
            reason,
            message: message.into(),
        });
    }

    fn phase(&mut self, phase: CanaryPhase, message: impl Into<String>) {
        if self.status.phase != phase {
            self.status.phase = phase;
            self.status.last_transition_time = Some(Time(self.input.now));
        }
        self.status.message = Some(message.into());
    }

    fn interval(&self) -> Duration {
        self.input.canary.spec.analysis.interval()
    }

    /// Starts (or restarts) the analysis of `revision` from weight 0.
    fn start(&mut self, revision: &str) {
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
                false,
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
            self.event(false, reasons::WAITING_APPROVAL, format!("New revision {revision} waits for approval to start (annotate serin.dev/approve-start={revision})"));
            self.phase(
                CanaryPhase::Waiting,
                format!("waiting for approval to start {revision}"),
            );
            self.requeue = POLL;
            return;
        }
        self.target = TargetScale::Up;
        self.event(
            false,
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
    fn restart(&mut self, revision: &str, during: &str) {
        self.event(
            false,
            reasons::RESTARTED,
            format!("New revision {revision} during {during}, restarting from weight 0"),
        );
        self.start(revision);
    }

    fn rollback(&mut self, why: String) {
        self.status.canary_weight = 0;
        self.target = TargetScale::Down;
        self.event(
            true,
            reasons::ROLLED_BACK,
            format!("Canary rolled back: {why}"),
        );
        self.phase(CanaryPhase::Failed, why);
        self.requeue = self.interval().max(POLL);
    }

    fn finish(self) -> Plan {
        let mut status = self.status;
        let now = self.input.now;
        let generation = self.input.canary.metadata.generation;
        status.observed_generation = generation;
        conditions::set_for_phase(&mut status, now, generation);
        Plan {
            status,
            primary: self.primary,
            target: self.target,
            events: self.events,
            requeue: self.requeue,
        }
    }
}

/// Decides the next step of one Canary.
pub fn plan(input: &Input<'_>) -> Plan {
    let canary = input.canary;
    let current = canary.status.clone().unwrap_or_default();
    let mut b = Builder {
        input,
        status: current.clone(),
        primary: PrimaryAction::Keep,
        target: TargetScale::Keep,
        events: Vec::new(),
        requeue: canary.spec.analysis.interval().max(POLL),
    };

    let Some(target) = &input.observed.target else {
        b.status.message = Some(format!(
            "target {} {} not found: create it or fix spec.targetRef",
            canary.spec.target_ref.kind, canary.spec.target_ref.name
        ));
        b.requeue = Duration::from_secs(10);
        return b.finish();
    };

    if canary.spec.suspend {
        b.status.message =
            Some("suspended: no changes are made until spec.suspend is false".into());
        return b.finish();
    }

    match current.phase {
        CanaryPhase::Initializing | CanaryPhase::Terminating => initialize(&mut b, target),
        CanaryPhase::Initialized | CanaryPhase::Succeeded | CanaryPhase::Failed => {
            if current.last_applied_spec.as_deref() != Some(&target.revision) {
                b.start(&target.revision);
            } else {
                // Settled: keep the target scaled down (a restart may have stopped short).
                b.target = TargetScale::Down;
                b.requeue = Duration::from_secs(60);
            }
        }
        CanaryPhase::Waiting => {
            if current.last_applied_spec.as_deref() != Some(&target.revision) {
                b.start(&target.revision);
            } else if input.gates.abort {
                b.rollback(format!(
                    "aborted by annotation for revision {}",
                    target.revision
                ));
            } else if input.gates.start_approved {
                // The canary is scaled up only now: its progress deadline starts now, not
                // when the revision began waiting for approval.
                b.status.analysis_start_time = Some(Time(input.now));
                b.target = TargetScale::Up;
                b.event(
                    false,
                    reasons::APPROVED,
                    format!("Start of {} approved", target.revision),
                );
                b.phase(
                    CanaryPhase::Progressing,
                    format!("starting the canary {}", target.revision),
                );
                b.requeue = POLL;
            } else {
                b.requeue = POLL;
            }
        }
        CanaryPhase::Progressing => progress(&mut b, target),
        CanaryPhase::WaitingPromotion => {
            if current.last_applied_spec.as_deref() != Some(&target.revision) {
                b.restart(&target.revision, "analysis");
            } else if input.gates.abort {
                b.rollback(format!(
                    "aborted by annotation for revision {}",
                    target.revision
                ));
            } else if input.gates.promotion_approved {
                b.event(
                    false,
                    reasons::APPROVED,
                    format!("Promotion of {} approved", target.revision),
                );
                b.primary = PrimaryAction::Promote;
                b.phase(
                    CanaryPhase::Promoting,
                    format!("copying {} to the primary", target.revision),
                );
                b.requeue = POLL;
            } else {
                b.requeue = POLL;
            }
        }
        CanaryPhase::Promoting => promote(&mut b, target),
        CanaryPhase::Finalising => {
            // What was promoted is the analysed revision, even if the target has
            // changed since; a newer revision starts its own analysis next.
            let promoted = current.last_applied_spec.clone().unwrap_or_default();
            b.status.canary_weight = 0;
            b.target = TargetScale::Down;
            b.status.last_promoted_spec = Some(promoted.clone());
            b.event(
                false,
                reasons::SUCCEEDED,
                format!("Promotion of {promoted} completed, canary scaled to zero"),
            );
            b.phase(
                CanaryPhase::Succeeded,
                format!("revision {promoted} promoted"),
            );
            b.requeue = POLL;
        }
    }
    b.finish()
}

fn initialize(b: &mut Builder<'_>, target: &Target) {
    let observed = b.input.observed;
    match &observed.primary {
        None => {
            b.primary = PrimaryAction::Bootstrap;
            b.phase(CanaryPhase::Initializing, "creating the primary");
            b.requeue = POLL;
        }
        Some(primary) => match &primary.ready {
            Readiness::Ready => {
                b.target = TargetScale::Down;
                b.status.canary_weight = 0;
                b.status.last_applied_spec = Some(target.revision.clone());
                b.status.last_promoted_spec = Some(target.revision.clone());
                b.event(
                    false,
                    reasons::INITIALIZED,
                    format!(
                        "Initialization done: the primary serves {}",
                        target.revision
                    ),
                );
                b.phase(
                    CanaryPhase::Initialized,
                    format!("primary ready with {}", target.revision),
                );
                b.requeue = Duration::from_secs(60);
            }
            Readiness::NotReady(why) => {
                b.phase(
                    CanaryPhase::Initializing,
                    format!("waiting for the primary: {why}"),
                );
                b.requeue = POLL;
            }
        },
    }
}

fn progress(b: &mut Builder<'_>, target: &Target) {
    let input = b.input;
    let canary = input.canary;
    let status = b.status.clone();
    // Keep asking for the canary's replicas: a restart between the status write and the
    // scale-up, or someone scaling it down, must not leave the analysis without pods.
    b.target = TargetScale::Up;
    if status.last_applied_spec.as_deref() != Some(&target.revision) {
        b.restart(&target.revision, "analysis");
        return;
    }
    if input.gates.abort {
        b.rollback(format!(
            "aborted by annotation for revision {}",
            target.revision
        ));
        return;
    }
    if let Readiness::NotReady(why) = &target.ready {
        // The deadline counts from the last time the canary was seen ready: the last
        // step (steps are taken only when it is ready), else the start of this analysis.
        // A canary that stops being ready late in a long analysis gets the whole deadline
        // to recover, as a Deployment's progress deadline does.
        let last_ready = status
            .last_analysis_time
            .clone()
            .or_else(|| status.analysis_start_time.clone());
        let waited = since(&last_ready, input.now);
        if waited > canary.spec.progress_deadline() {
            b.rollback(format!(
                "canary not ready within the progress deadline of {}s: {why}",
                canary.spec.progress_deadline().as_secs()
            ));
        } else {
            b.status.message = Some(format!("waiting for the canary: {why}"));
            b.requeue = POLL;
        }
        return;
    }
    let threshold = canary.spec.analysis.threshold();
    let weight = u32::try_from(status.canary_weight).unwrap_or(0);
    if weight == 0 {
        // The canary is ready: route the first step of traffic to it. No checks run at
        // weight 0, since no traffic reaches the canary yet.
        step_to(b, next_weight(canary, 0), target);
        return;
    }
    let Some(verdict) = &input.verdict else {
        let remaining = canary
            .spec
            .analysis
            .interval()
            .saturating_sub(since(&status.last_analysis_time, input.now));
        b.requeue = remaining.max(Duration::from_millis(200));
        return;
    };
    b.status.last_analysis_time = Some(Time(input.now));
    match verdict {
        Verdict::Rollback(why) => b.rollback(why.clone()),
        Verdict::Fail(why) => {
            b.status.failed_checks += 1;
            let failed = u32::try_from(b.status.failed_checks).unwrap_or(0);
            b.event(
                true,
                reasons::CHECK_FAILED,
                format!("Halt advancement: {why} (failed checks {failed}/{threshold})"),
            );
            if failed >= threshold {
                b.rollback(format!(
                    "failed checks threshold reached {failed}/{threshold}: {why}"
                ));
            } else {
                b.status.message = Some(format!("check failed ({failed}/{threshold}): {why}"));
                b.requeue = canary.spec.analysis.interval();
            }
        }
        Verdict::Hold(why) => {
            b.status.marginal_checks += 1;
            b.event(
                false,
                reasons::HOLD,
                format!("Holding at weight {weight}: {why}"),
            );
            b.status.message = Some(format!("holding at weight {weight}: {why}"));
            b.requeue = canary.spec.analysis.interval();
        }
        Verdict::Pass => {
            if weight >= canary.spec.analysis.max_weight() {
                if canary.spec.approvals().promotion && !input.gates.promotion_approved {
                    b.event(false, reasons::WAITING_APPROVAL, format!("Analysis of {} passed; promotion waits for approval (annotate serin.dev/approve-promotion={})", target.revision, target.revision));
                    b.phase(
                        CanaryPhase::WaitingPromotion,
                        format!("waiting for approval to promote {}", target.revision),
                    );
                    b.requeue = POLL;
                } else {
                    b.event(
                        false,
                        reasons::PROMOTING,
                        format!(
                            "Analysis of {} passed at weight {weight}, copying it to the primary",
                            target.revision
                        ),
                    );
                    b.primary = PrimaryAction::Promote;
                    b.phase(
                        CanaryPhase::Promoting,
                        format!("copying {} to the primary", target.revision),
                    );
                    b.requeue = POLL;
                }
            } else if canary.spec.approvals().traffic_increase
                && !input.gates.traffic_increase_approved
            {
                b.status.message = Some(format!(
                    "weight {weight}: waiting for approval to increase traffic (annotate serin.dev/approve-traffic-increase={})",
                    target.revision
                ));
                b.requeue = POLL;
            } else {
                step_to(b, next_weight(canary, weight), target);
            }
        }
    }
}

fn step_to(b: &mut Builder<'_>, weight: u32, target: &Target) {
    if b.status.canary_weight == 0 {
        // The analysis proper starts with the first traffic: metric windows, the
        // sequential test's counts and the compared samples are measured from here,
        // not from the detection (the canary may take a while to become ready).
        b.status.analysis_start_time = Some(Time(b.input.now));
    }
    b.status.canary_weight = i32::try_from(weight).unwrap_or(100);
    b.status.last_analysis_time = Some(Time(b.input.now));
    b.event(
        false,
        reasons::ADVANCED,
        format!("Advance {} canary weight {weight}", target.revision),
    );
    b.status.message = Some(format!("analysing {} at weight {weight}", target.revision));
    b.requeue = b.interval();
}

fn promote(b: &mut Builder<'_>, target: &Target) {
    let input = b.input;
    let canary = input.canary;
    if b.status.last_applied_spec.as_deref() != Some(&target.revision) {
        // Never copy a revision that was not analysed.
        b.restart(&target.revision, "promotion");
        return;
    }
    b.primary = PrimaryAction::Promote;
    let promoted = input
        .observed
        .primary
        .as_ref()
        .filter(|p| p.revision.as_deref() == Some(&target.revision));
    match promoted.map(|p| &p.ready) {
        Some(Readiness::Ready) => {
            let weight = u32::try_from(b.status.canary_weight).unwrap_or(0);
            let step = canary.spec.analysis.step_weight_promotion();
            let due =
                since(&b.status.last_analysis_time, input.now) >= canary.spec.analysis.interval();
            if weight > step && due {
                // Move traffic back to the (now promoted) primary step by step.
                b.status.canary_weight = i32::try_from(weight - step).unwrap_or(0);
                b.status.last_analysis_time = Some(Time(input.now));
                b.event(
                    false,
                    reasons::ADVANCED,
                    format!("Promotion: primary weight {}", 100 - (weight - step)),
                );
                b.requeue = canary.spec.analysis.interval();
            } else if weight > step {
                b.requeue = canary
                    .spec
                    .analysis
                    .interval()
                    .saturating_sub(since(&b.status.last_analysis_time, input.now))
                    .max(Duration::from_millis(200));
            } else {
                b.status.canary_weight = 0;
                b.phase(
                    CanaryPhase::Finalising,
                    format!(
                        "routing all traffic to the primary running {}",
                        target.revision
                    ),
                );
                b.requeue = POLL;
            }
        }
        Some(Readiness::NotReady(why)) => {
            b.status.message = Some(format!("waiting for the promoted primary: {why}"));
            b.requeue = POLL;
        }
        None => {
            b.status.message = Some(format!("copying {} to the primary", target.revision));
            b.requeue = POLL;
        }
    }
}
