//! Test builders for the rollout state machine: a Canary with readable knobs, what the
//! cluster looks like, a fake clock, and a small seeded random source for property-style
//! loops. In the style of kube-rs controller-rs `fixtures.rs`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;

use crate::api::{
    Approvals, Canary, CanaryAnalysis, CanaryPhase, CanaryService, CanarySpec, CanaryStatus,
    CanaryWebhook, TargetRef, WebhookType,
};
use crate::rollout::plan::{self, Gates, Input, Observed, Plan, Primary, Readiness, Target};

/// A Canary for `podinfo` with stepWeight 10 and every other knob at its default.
pub fn canary() -> Canary {
    Canary::test()
}

/// Nothing observed yet: no target, no primary.
pub fn observed() -> Observed {
    Observed::default()
}

pub fn ready() -> Readiness {
    Readiness::Ready
}

pub fn not_ready(why: &str) -> Readiness {
    Readiness::NotReady(why.to_string())
}

impl Canary {
    /// A Canary for `podinfo` with stepWeight 10 and every other knob at its default.
    pub fn test() -> Self {
        let mut canary = Canary::new(
            "podinfo",
            CanarySpec {
                target_ref: TargetRef {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: "podinfo".into(),
                },
                service: CanaryService {
                    port: 9898,
                    ..Default::default()
                },
                analysis: CanaryAnalysis {
                    step_weight: Some(10),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        canary.metadata = ObjectMeta {
            name: Some("podinfo".into()),
            namespace: Some("test".into()),
            generation: Some(1),
            ..Default::default()
        };
        canary
    }

    pub fn step_weight(mut self, weight: i32) -> Self {
        self.spec.analysis.step_weight = Some(weight);
        self
    }

    /// Replaces stepWeight with an explicit list of weights.
    pub fn step_weights(mut self, weights: &[i32]) -> Self {
        self.spec.analysis.step_weight = None;
        self.spec.analysis.step_weights = weights.to_vec();
        self
    }

    pub fn max_weight(mut self, weight: i32) -> Self {
        self.spec.analysis.max_weight = Some(weight);
        self
    }

    pub fn threshold(mut self, threshold: i32) -> Self {
        self.spec.analysis.threshold = Some(threshold);
        self
    }

    pub fn interval_secs(mut self, secs: u64) -> Self {
        self.spec.analysis.interval = Some(format!("{secs}s"));
        self
    }

    pub fn step_weight_promotion(mut self, weight: i32) -> Self {
        self.spec.analysis.step_weight_promotion = Some(weight);
        self
    }

    pub fn progress_deadline_secs(mut self, secs: i32) -> Self {
        self.spec.progress_deadline_seconds = Some(secs);
        self
    }

    pub fn skip_analysis(mut self) -> Self {
        self.spec.skip_analysis = true;
        self
    }

    pub fn suspended(mut self) -> Self {
        self.spec.suspend = true;
        self
    }

    pub fn requires_start_approval(mut self) -> Self {
        self.approvals_mut().start = true;
        self
    }

    pub fn requires_traffic_increase_approval(mut self) -> Self {
        self.approvals_mut().traffic_increase = true;
        self
    }

    pub fn requires_promotion_approval(mut self) -> Self {
        self.approvals_mut().promotion = true;
        self
    }

    /// Declares a webhook of `kind` named after it.
    pub fn webhook(mut self, kind: WebhookType) -> Self {
        let name = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.spec.analysis.webhooks.push(CanaryWebhook {
            name,
            type_: Some(kind),
            url: "http://gate.test/".into(),
            ..Default::default()
        });
        self
    }

    /// Declares a conformance test run before traffic (its Job template is empty: the
    /// plan never reads it).
    pub fn conformance_test(self, name: &str) -> Self {
        self.conformance_test_at(name, &[])
    }

    /// Declares a conformance test run at `when`.
    pub fn conformance_test_at(mut self, name: &str, when: &[crate::api::ConformanceWhen]) -> Self {
        self.spec
            .analysis
            .conformance_tests
            .push(crate::api::ConformanceTest {
                name: name.into(),
                when: when.to_vec(),
                ..Default::default()
            });
        self
    }

    fn approvals_mut(&mut self) -> &mut Approvals {
        self.spec.approvals.get_or_insert_with(Approvals::default)
    }

    /// Sets the status through the [`CanaryStatus`] builders, starting from the current
    /// status (or the default one).
    pub fn with_status(mut self, f: impl FnOnce(CanaryStatus) -> CanaryStatus) -> Self {
        self.status = Some(f(self.status.take().unwrap_or_default()));
        self
    }
}

impl CanaryStatus {
    pub fn phase(mut self, phase: CanaryPhase) -> Self {
        self.phase = phase;
        self
    }

    pub fn weight(mut self, weight: i32) -> Self {
        self.canary_weight = weight;
        self
    }

    pub fn failed_checks(mut self, n: i32) -> Self {
        self.failed_checks = n;
        self
    }

    pub fn marginal_checks(mut self, n: i32) -> Self {
        self.marginal_checks = n;
        self
    }

    /// The revision under analysis (`lastAppliedSpec`).
    pub fn applied(mut self, revision: &str) -> Self {
        self.last_applied_spec = Some(revision.to_string());
        self
    }

    /// The revision the primary was last promoted to (`lastPromotedSpec`).
    pub fn promoted(mut self, revision: &str) -> Self {
        self.last_promoted_spec = Some(revision.to_string());
        self
    }

    /// Both `lastAppliedSpec` and `lastPromotedSpec`: a settled release of `revision`.
    pub fn settled_on(self, revision: &str) -> Self {
        self.applied(revision).promoted(revision)
    }

    pub fn analysis_started_at(mut self, at: Timestamp) -> Self {
        self.analysis_start_time = Some(Time(at));
        self
    }

    pub fn last_analysed_at(mut self, at: Timestamp) -> Self {
        self.last_analysis_time = Some(Time(at));
        self
    }
}

impl Observed {
    pub fn target(mut self, revision: &str, ready: Readiness) -> Self {
        self.target = Some(Target {
            revision: revision.to_string(),
            ready,
        });
        self
    }

    pub fn primary(mut self, revision: &str, ready: Readiness) -> Self {
        self.primary = Some(Primary {
            revision: Some(revision.to_string()),
            ready,
        });
        self
    }
}

/// A fake clock: starts at a fixed instant and moves only when told to.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    now: Timestamp,
}

impl Clock {
    /// 2025-01-01T00:00:00Z.
    pub fn start() -> Self {
        Clock {
            now: Timestamp::from_second(1_735_689_600).expect("valid timestamp"),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Moves the clock forward and returns the new time.
    pub fn advance_secs(&mut self, secs: u64) -> Timestamp {
        self.advance(Duration::from_secs(secs))
    }

    pub fn advance(&mut self, by: Duration) -> Timestamp {
        self.now = self.now.checked_add(by).expect("time in range");
        self.now
    }

    /// The clock's current time minus `secs`, for statuses written in the past.
    pub fn ago_secs(&self, secs: u64) -> Timestamp {
        self.now
            .checked_sub(Duration::from_secs(secs))
            .expect("time in range")
    }
}

/// A canary analysing `rev-b` while the primary serves `rev-a`, at `weight`, last
/// checked `since_step` seconds before the clock's time (its analysis started a minute
/// before that).
pub fn analysing_rev_b(canary: Canary, clock: &Clock, weight: i32, since_step: u64) -> Canary {
    canary.with_status(|s| {
        s.phase(CanaryPhase::Progressing)
            .settled_on("rev-a")
            .applied("rev-b")
            .weight(weight)
            .analysis_started_at(clock.ago_secs(since_step + 60))
            .last_analysed_at(clock.ago_secs(since_step))
    })
}

/// Both workloads ready: the target runs `rev-b`, the primary `rev-a`.
pub fn rev_b_ready() -> Observed {
    observed()
        .target("rev-b", ready())
        .primary("rev-a", ready())
}

/// Plans one reconcile with no gates and no verdict.
pub fn plan_at(canary: &Canary, observed: &Observed, now: Timestamp) -> Plan {
    plan_with(canary, observed, Gates::default(), None, now)
}

/// Plans one reconcile.
pub fn plan_with(
    canary: &Canary,
    observed: &Observed,
    gates: Gates,
    verdict: Option<plan::Verdict>,
    now: Timestamp,
) -> Plan {
    plan::plan(&Input {
        canary,
        observed,
        gates,
        verdict,
        webhooks: plan::Webhooks::default(),
        counters: None,
        now,
    })
}

/// Plans one reconcile with what the webhooks answered.
pub fn plan_webhooks(
    canary: &Canary,
    observed: &Observed,
    webhooks: plan::Webhooks,
    verdict: Option<plan::Verdict>,
    now: Timestamp,
) -> Plan {
    plan::plan(&Input {
        canary,
        observed,
        gates: Gates::default(),
        verdict,
        webhooks,
        counters: None,
        now,
    })
}

/// Writes a plan's status back, as the controller does after acting.
pub fn apply(canary: &mut Canary, plan: &Plan) {
    canary.status = Some(plan.status.clone());
}

/// SplitMix64: a tiny deterministic random source, so property-style loops replay the
/// same sequences on every run and every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
