//! Operating serin: several replicas elect a leader on a Lease, and only the leader
//! acts; when it dies, another takes over within the lease and finishes the release.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serin::api::CanaryPhase;

use crate::fixture::{Process, Rollout, canary_spec};
use crate::harness::{eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(90);
/// Short lease settings, so that the takeover is seen in seconds.
const LEASE: [&str; 6] = [
    "--leader-elect-lease-duration",
    "6s",
    "--leader-elect-renew-deadline",
    "4s",
    "--leader-elect-retry-period",
    "1s",
];

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("serin-leader")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

fn log(p: &Process) -> String {
    std::fs::read_to_string(&p.log).unwrap_or_default()
}

/// Initializes podinfo 6.0.0 with a Canary stepping every `interval`, releases 6.0.1,
/// and returns once the route sends it at least 20%.
async fn release_until_weight_20(rollout: &Rollout, interval: &str) {
    rollout
        .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
        .await;
    let mut spec = canary_spec(2);
    spec["spec"]["analysis"]["interval"] = interval.into();
    rollout.apply("kustomize-controller", &spec).await;
    rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
    rollout
        .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
        .await;
    eventually("the canary at weight 20", SETTLE, || async {
        match rollout.vs_weights().await {
            Some((_, w)) if w >= 20 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn of_two_replicas_only_the_leader_acts_and_the_other_finishes_when_it_dies() {
    with_namespace("e2e-leader", |client, ns| async move {
        let rollout = Rollout::start_without_controller(client.clone(), &ns, 100);
        let mut replicas = vec![
            ("replica-a", rollout.spawn_controller("replica-a", &LEASE)),
            ("replica-b", rollout.spawn_controller("replica-b", &LEASE)),
        ];
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let first = eventually("a leader", Duration::from_secs(20), || async {
            holder(&leases).await.ok_or("no holder yet".to_string())
        })
        .await;
        release_until_weight_20(&rollout, "3s").await;

        let leader_at = replicas.iter().position(|(id, _)| *id == first).unwrap();
        let (_, mut leader) = replicas.remove(leader_at);
        let (standby_id, standby) = replicas.remove(0);
        assert_eq!(
            standby.reconciles().await,
            0,
            "the standby replica never reconciled while the other led:\n{}",
            log(&standby)
        );
        assert!(leader.reconciles().await > 0, "while the leader reconciled");
        // SIGKILL: the Lease is not released, so the standby waits for it to expire.
        let killed = Instant::now();
        leader.child.start_kill().unwrap();
        leader.child.wait().await.unwrap();
        eventually(
            "the standby to take the Lease",
            Duration::from_secs(20),
            || async {
                match holder(&leases).await {
                    Some(h) if h == standby_id => Ok(()),
                    other => Err(format!("held by {other:?}")),
                }
            },
        )
        .await;
        let takeover = killed.elapsed();
        println!("takeover after SIGKILL of the leader: {takeover:?} (lease 6s)");

        let weights = rollout
            .record_weights_until(CanaryPhase::Succeeded, SETTLE)
            .await;
        println!("weights after the takeover: {weights:?}");
        assert!(
            weights.windows(2).all(|w| w[1] >= w[0] || w[1] == 0),
            "the weight never went back: {weights:?}"
        );
        let events = rollout.events().await;
        let mut advances: Vec<&str> = events
            .iter()
            .filter(|(_, reason, _)| reason == "Advanced")
            .map(|(_, _, message)| message.as_str())
            .collect();
        let all = advances.len();
        advances.sort_unstable();
        advances.dedup();
        assert_eq!(advances.len(), all, "no step was taken twice: {events:?}");
        assert!(
            log(&standby).contains("took the leader Lease"),
            "{}",
            log(&standby)
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() {
    with_namespace("e2e-handover", |client, ns| async move {
        let rollout = Rollout::start_without_controller(client.clone(), &ns, 100);
        let long = [
            "--leader-elect-lease-duration",
            "60s",
            "--leader-elect-renew-deadline",
            "40s",
            "--leader-elect-retry-period",
            "1s",
        ];
        let mut a = rollout.spawn_controller("replica-a", &long);
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        eventually("replica-a to lead", Duration::from_secs(20), || async {
            match holder(&leases).await {
                Some(h) if h == "replica-a" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let b = rollout.spawn_controller("replica-b", &long);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let stopped = Instant::now();
        let pid = a.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        a.child.wait().await.unwrap();
        eventually("replica-b to lead", Duration::from_secs(20), || async {
            match holder(&leases).await {
                Some(h) if h == "replica-b" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        println!(
            "handover after SIGTERM: {:?} (a 60s lease would otherwise have to expire)",
            stopped.elapsed()
        );
        assert!(stopped.elapsed() < Duration::from_secs(30));
        drop(b);
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn sigterm_mid_step_leaves_consistent_routes_and_a_restart_finishes_the_release() {
    with_namespace("e2e-sigterm", |client, ns| async move {
        let mut rollout = Rollout::start(client, &ns).await;
        release_until_weight_20(&rollout, "2s").await;
        // A rolling update of serin itself, in the middle of the release.
        let mut serin = rollout.serin.take().unwrap();
        let pid = serin.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), serin.child.wait())
            .await
            .expect("serin exits within 10s of SIGTERM")
            .unwrap();
        println!("serin exited after SIGTERM: {status}");
        let (primary, canary) = rollout.vs_weights().await.expect("the route is there");
        assert_eq!(primary + canary, 100, "the weights add up to 100");
        if canary > 0 {
            assert!(
                rollout.ready_replicas("podinfo").await > 0,
                "the canary that gets {canary}% is ready"
            );
        }
        assert!(rollout.ready_replicas("podinfo-primary").await > 0);

        rollout.start_controller();
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
