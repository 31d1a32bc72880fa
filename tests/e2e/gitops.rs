//! A GitOps tool re-applies its manifests at every interval, whether or not they changed:
//! Flux's kustomize-controller server-side-applies the Deployment, `replicas` included,
//! and the Canary. A re-apply that changes nothing in the pod template is not a release:
//! no analysis starts, the primary's pods are not touched, and the target, which the
//! re-apply scales up again, goes back to zero without ever getting traffic
//! (docs/rollout.md, "A GitOps tool re-applying the same manifests").

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::with_namespace;

const SETTLE: Duration = Duration::from_secs(60);
/// How many times the manifests are re-applied, and how long apart.
const REAPPLIES: usize = 3;
const APART: Duration = Duration::from_secs(3);

/// The uids of the pods matching `selector`.
async fn pod_uids(rollout: &Rollout, selector: &str) -> BTreeSet<String> {
    rollout
        .pods(selector)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.uid)
        .collect()
}

/// Requests the simulator has sent to the target's own pods (the canary) so far.
async fn requests_to_the_target(rollout: &Rollout) -> f64 {
    rollout
        .sim_samples("istio_requests_total")
        .await
        .iter()
        .filter(|s| s.label("destination_workload") == "podinfo")
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn manifests_reapplied_unchanged_by_flux_start_no_release_and_touch_no_primary_pod() {
    with_namespace("e2e-reapply", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        let canary = canary_spec(2);
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &canary).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        rollout
            .await_replicas("podinfo", 0, "the promoted target is scaled to 0")
            .await;

        let promoted = rollout.canary().await.status.unwrap();
        let primary_pods = pod_uids(&rollout, "app=podinfo-primary").await;
        let primary_generation = rollout
            .deployment("podinfo-primary")
            .await
            .metadata
            .generation;
        let events = rollout.events().await;
        let served_before = requests_to_the_target(&rollout).await;
        let mut target_pods = BTreeSet::new();

        for _ in 0..REAPPLIES {
            rollout
                .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
                .await;
            rollout.apply("kustomize-controller", &canary).await;
            let until = Instant::now() + APART;
            while Instant::now() < until {
                let status = rollout.canary().await.status.unwrap();
                assert_eq!(
                    (status.phase, status.canary_weight),
                    (CanaryPhase::Succeeded, 0),
                    "a re-apply that changes nothing starts no release: {:?}",
                    status.message
                );
                assert_eq!(
                    status.last_applied_spec, promoted.last_applied_spec,
                    "the revision stays the promoted one"
                );
                assert_eq!(rollout.vs_weights().await, Some((100, 0)));
                target_pods.extend(pod_uids(&rollout, "app=podinfo").await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        rollout
            .await_replicas("podinfo", 0, "the re-applied target goes back to 0")
            .await;
        assert_eq!(
            pod_uids(&rollout, "app=podinfo-primary").await,
            primary_pods,
            "the primary's pods were neither restarted nor replaced"
        );
        let primary = rollout.deployment("podinfo-primary").await;
        assert_eq!(
            primary.metadata.generation, primary_generation,
            "the primary Deployment was not rewritten"
        );
        assert_eq!(Rollout::image(&primary), format!("{IMAGE}:6.0.1"));
        assert_eq!(
            rollout.events().await,
            events,
            "no event: nothing happened to the release"
        );
        assert_eq!(
            requests_to_the_target(&rollout).await,
            served_before,
            "the target's pods, started by the re-apply, got no request"
        );
        println!(
            "{REAPPLIES} re-applies {APART:?} apart: the target's pods started {} times in all, \
             the primary's {} pods untouched",
            target_pods.len(),
            primary_pods.len()
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
