//! Status conditions and event reasons. `Ready` follows kstatus, so Flux health checks
//! and `kubectl wait --for=condition=Ready` work: True when the primary serves a settled
//! release, False while a release is in flight or after a rollback. `Promoted` tells
//! whether the last revision reached the primary.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{CanaryPhase, CanaryStatus};

pub const READY: &str = "Ready";
pub const PROMOTED: &str = "Promoted";
/// Whether every parent of a Gateway API route accepted its current generation.
pub const ROUTE_ACCEPTED: &str = "RouteAccepted";

/// Event and condition reasons.
pub mod reasons {
    pub const INITIALIZED: &str = "Initialized";
    pub const NEW_REVISION: &str = "NewRevision";
    pub const RESTARTED: &str = "Restarted";
    pub const ADVANCED: &str = "Advanced";
    pub const CHECK_FAILED: &str = "CheckFailed";
    pub const HOLD: &str = "Hold";
    pub const WAITING_APPROVAL: &str = "WaitingApproval";
    pub const APPROVED: &str = "Approved";
    pub const PROMOTING: &str = "Promoting";
    /// The sequential test found the canary at least as good as the primary: the
    /// remaining steps are skipped.
    pub const PROMOTE_EARLY: &str = "PromoteEarly";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const ROLLED_BACK: &str = "RolledBack";
    pub const SKIPPED_ANALYSIS: &str = "SkippedAnalysis";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PROGRESSING: &str = "Progressing";
    pub const INITIALIZING: &str = "Initializing";
    pub const TERMINATING: &str = "Terminating";
    pub const ACCEPTED: &str = "Accepted";
    pub const ROUTE_NOT_ACCEPTED: &str = "RouteNotAccepted";
}

/// Sets `type_` to `status`, keeping the transition time when the status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    match existing {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: Time(now),
            observed_generation: generation,
        }),
    }
}

pub fn is_true(status: &CanaryStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Derives Ready and Promoted from the phase.
pub fn set_for_phase(status: &mut CanaryStatus, now: Timestamp, generation: Option<i64>) {
    let message = status.message.clone().unwrap_or_default();
    let (ready, reason) = match status.phase {
        CanaryPhase::Initialized => (true, reasons::INITIALIZED),
        CanaryPhase::Succeeded => (true, reasons::SUCCEEDED),
        CanaryPhase::Failed => (false, reasons::ROLLED_BACK),
        CanaryPhase::Initializing => (false, reasons::INITIALIZING),
        CanaryPhase::Terminating => (false, reasons::TERMINATING),
        CanaryPhase::Waiting | CanaryPhase::WaitingPromotion => (false, reasons::WAITING_APPROVAL),
        CanaryPhase::Progressing | CanaryPhase::Promoting | CanaryPhase::Finalising => {
            (false, reasons::PROGRESSING)
        }
    };
    set(
        &mut status.conditions,
        READY,
        ready,
        reason,
        &message,
        now,
        generation,
    );
    let promoted = match status.phase {
        CanaryPhase::Initialized | CanaryPhase::Succeeded => Some((true, reason)),
        CanaryPhase::Failed => Some((false, reasons::ROLLED_BACK)),
        CanaryPhase::Progressing | CanaryPhase::Waiting | CanaryPhase::WaitingPromotion => {
            Some((false, reasons::PROGRESSING))
        }
        _ => None,
    };
    if let Some((promoted, reason)) = promoted {
        set(
            &mut status.conditions,
            PROMOTED,
            promoted,
            reason,
            &message,
            now,
            generation,
        );
    }
}
