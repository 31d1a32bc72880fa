//! Leader election on a `coordination.k8s.io` Lease, so that of several replicas only one
//! acts. The usual client-go scheme: a candidate takes the Lease when it is free or its
//! holder has not renewed it for `lease_duration` (measured on this replica's clock, from
//! when it last saw the record change, so clocks need not agree); the leader renews it
//! every `retry_period`, and stops acting if it could not renew for `renew_deadline`,
//! which is shorter than `lease_duration`: the old leader has stopped before anyone else
//! may take over.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{Api, Client, api::ObjectMeta, api::PostParams};
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use tracing::{info, warn};

/// How the election runs (`serin run --leader-elect-*`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity in the Lease (its Pod name, by default).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often candidates try, and the leader renews.
    pub retry_period: Duration,
}

impl Settings {
    /// The settings must let the old leader stop before a new one may start.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--leader-elect-renew-deadline ({:?}) must be shorter than --leader-elect-lease-duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--leader-elect-retry-period ({:?}) must be shorter than --leader-elect-renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// `serin_leader`: 1 while this replica holds the Lease.
#[derive(Clone, Default)]
pub struct LeaderMetrics {
    leader: Gauge,
}

impl LeaderMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and acts, 0 otherwise",
            self.leader.clone(),
        );
    }
}

/// What a candidate may do with the Lease record it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// This replica holds it: renew it.
    Renew,
    /// Another replica holds it and renewed it within the lease duration.
    Wait,
}

/// Decides from the Lease's holder and how long ago this replica last saw the record
/// change.
pub fn decide(
    holder: Option<&str>,
    me: &str,
    unchanged_for: Duration,
    lease_duration: Duration,
) -> Decision {
    match holder.filter(|h| !h.is_empty()) {
        Some(h) if h == me => Decision::Renew,
        Some(_) if unchanged_for < lease_duration => Decision::Wait,
        _ => Decision::Acquire,
    }
}

/// What identifies one version of the Lease record: its holder and renew time.
type Record = (Option<String>, Option<MicroTime>);

/// A candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    settings: Settings,
    metrics: LeaderMetrics,
    /// The last record seen (holder and renew time) and when it was first seen.
    observed: Option<(Record, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    pub fn new(client: Client, settings: Settings, metrics: LeaderMetrics) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            metrics,
            observed: None,
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let me = &self.settings.identity;
        let held = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me.as_str());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(15),
            ),
            acquire_time: if held {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(now())
            },
            renew_time: Some(now()),
            lease_transitions: Some(if held || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..Default::default()
        }
    }

    /// One attempt to take or renew the Lease: `Ok(true)` while this replica holds it.
    pub async fn try_acquire_or_renew(&mut self) -> kube::Result<bool> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.saw(created.spec.as_ref());
                    Ok(true)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let previous = lease.spec.clone().unwrap_or_default();
        self.saw(Some(&previous));
        let unchanged_for = self
            .observed
            .as_ref()
            .map(|(_, at)| at.elapsed())
            .unwrap_or_default();
        let decision = decide(
            previous.holder_identity.as_deref(),
            &self.settings.identity,
            unchanged_for,
            self.settings.lease_duration,
        );
        if decision == Decision::Wait {
            return Ok(false);
        }
        lease.spec = Some(self.spec(Some(&previous)));
        // `replace` carries the resourceVersion read above: if another candidate wrote
        // the Lease in between, this write is refused and that candidate wins.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                if decision == Decision::Acquire {
                    info!(
                        identity = %self.settings.identity,
                        previous = ?previous.holder_identity,
                        "took the leader Lease"
                    );
                }
                self.saw(written.spec.as_ref());
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn saw(&mut self, spec: Option<&LeaseSpec>) {
        let key: Record = (
            spec.and_then(|s| s.holder_identity.clone()),
            spec.and_then(|s| s.renew_time.clone()),
        );
        if self.observed.as_ref().map(|(k, _)| k) != Some(&key) {
            self.observed = Some((key, Instant::now()));
        }
    }

    /// Waits until this replica holds the Lease. `on_first_read` is called once the
    /// API server has answered, whoever holds it.
    pub async fn acquire(&mut self, on_first_read: impl FnOnce()) {
        let mut on_first_read = Some(on_first_read);
        let mut waiting_logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    self.metrics.leader.set(1);
                    return;
                }
                Ok(false) => {
                    if !waiting_logged {
                        info!(lease = %self.settings.name, "another replica leads; standing by");
                        waiting_logged = true;
                    }
                }
                Err(e) => warn!(error = %e, "reading the leader Lease failed"),
            }
            if self.observed.is_some()
                && let Some(f) = on_first_read.take()
            {
                f();
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renews the Lease every retry period; returns when it could not be renewed for the
    /// renew deadline (or another replica took it), after which this replica must stop
    /// acting at once.
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    warn!("another replica holds the leader Lease");
                    break;
                }
                Err(e) => warn!(error = %e, "renewing the leader Lease failed"),
            }
            if last_renewed.elapsed() >= self.settings.renew_deadline {
                warn!(
                    deadline = ?self.settings.renew_deadline,
                    "the leader Lease was not renewed within the renew deadline"
                );
                break;
            }
        }
        self.metrics.leader.set(0);
    }
}

/// Gives the Lease up (on shutdown), so that another replica takes over at once rather
/// than after the lease duration. Does nothing unless `identity` holds it. The renewal
/// loop may still be running (a SIGTERM whose controller is slow to stop) and renew the
/// Lease between the read and the write here; the write is then refused (409) and the
/// release is tried again on the newer Lease.
pub async fn release(client: Client, settings: &Settings) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    for _ in 0..5 {
        let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match api
            .replace(&settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                info!("released the leader Lease");
                return;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!("the Lease was renewed while being released; trying again");
            }
            Err(e) => {
                warn!(error = %e, "releasing the leader Lease failed");
                return;
            }
        }
    }
    warn!("releasing the leader Lease failed: it kept changing");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn a_free_lease_is_taken() {
        assert_eq!(decide(None, "a", Duration::ZERO, LEASE), Decision::Acquire);
        assert_eq!(
            decide(Some(""), "a", Duration::ZERO, LEASE),
            Decision::Acquire
        );
    }

    #[test]
    fn the_holder_renews_its_own_lease() {
        assert_eq!(
            decide(Some("a"), "a", Duration::from_secs(60), LEASE),
            Decision::Renew
        );
    }

    #[test]
    fn a_lease_renewed_within_its_duration_is_left_to_its_holder() {
        assert_eq!(
            decide(Some("b"), "a", Duration::from_secs(14), LEASE),
            Decision::Wait
        );
    }

    #[test]
    fn a_lease_not_renewed_for_its_duration_is_taken_over() {
        assert_eq!(decide(Some("b"), "a", LEASE, LEASE), Decision::Acquire);
    }

    #[test]
    fn the_old_leader_must_stop_before_a_new_one_may_start() {
        let settings = |lease, renew, retry| Settings {
            namespace: "serin-system".into(),
            name: "serin-leader".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        };
        assert!(settings(15, 10, 2).check().is_ok());
        assert!(
            settings(10, 10, 2)
                .check()
                .unwrap_err()
                .contains("renew-deadline")
        );
        assert!(
            settings(15, 10, 10)
                .check()
                .unwrap_err()
                .contains("retry-period")
        );
    }
}
