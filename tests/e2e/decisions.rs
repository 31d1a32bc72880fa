//! Decisions taken once and on the right evidence: a status write planned from a stale
//! copy of the Canary is refused by the API server, and a fix released right after a
//! rollback is judged on its own traffic, not on the rolled-back release's errors.

use std::time::Duration;

use kube::Api;
use serde_json::json;
use serin::api::{Canary, CanaryPhase};
use serin::controller::{Error, act::write_status};

use crate::fixture::{IMAGE, Rollout, canary_spec};
use crate::harness::with_namespace;

const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn a_status_planned_from_a_stale_canary_is_refused_so_no_decision_is_taken_twice() {
    with_namespace("e2e-stale", |client, ns| async move {
        let rollout = Rollout::start(client.clone(), &ns).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        rollout.apply("kustomize-controller", &canary_spec(2)).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .await_replicas("podinfo", 0, "the target is scaled to 0")
            .await;

        // A reconcile that read the Canary before its last change (here: an annotation
        // added since) must not record its decision.
        let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
        let stale = canaries.get("podinfo").await.unwrap();
        canaries
            .patch(
                "podinfo",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"touched": "yes"}}})),
            )
            .await
            .unwrap();
        let mut decision = stale.status.clone().unwrap();
        decision.message = Some("a decision planned from a stale copy".into());
        let refused = write_status(&client, &stale, &decision).await;
        assert!(
            matches!(refused, Err(Error::Conflict)),
            "the stale write is refused: {refused:?}"
        );
        let now = canaries.get("podinfo").await.unwrap();
        assert_ne!(
            now.status.unwrap().message,
            decision.message,
            "nothing of it was recorded"
        );
        // The same write from the current copy goes through.
        let mut fresh = now_status(&canaries).await;
        fresh.1.message = Some("planned from the current copy".into());
        write_status(&client, &fresh.0, &fresh.1).await.unwrap();
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

async fn now_status(canaries: &Api<Canary>) -> (Canary, serin::api::CanaryStatus) {
    let c = canaries.get("podinfo").await.unwrap();
    let s = c.status.clone().unwrap();
    (c, s)
}

#[tokio::test]
async fn a_fix_released_right_after_a_rollback_is_judged_on_its_own_traffic() {
    with_namespace("e2e-fixfwd", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        rollout
            .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
            .await;
        // A metric window far longer than the releases: the canary's series still hold
        // the bad release's errors when the fix gets its first traffic.
        let mut spec = canary_spec(2);
        spec["spec"]["analysis"]["interval"] = json!("2s");
        spec["spec"]["analysis"]["metrics"] = json!([
            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"}
        ]);
        rollout.apply("kustomize-controller", &spec).await;
        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;

        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.3, 40.0)
            .await;
        rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
        rollout
            .await_weights((100, 0), "all traffic is back on the primary")
            .await;

        // The fix, two seconds later.
        tokio::time::sleep(Duration::from_secs(2)).await;
        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.001, 40.0)
            .await;
        let weights = rollout
            .record_weights_until(CanaryPhase::Succeeded, SETTLE)
            .await;
        let canary = rollout.canary().await;
        let status = canary.status.unwrap();
        assert_eq!(
            status.failed_checks, 0,
            "no check of the fix counted the bad release's errors: {:?}",
            status.message
        );
        assert!(
            weights.contains(&50),
            "the fix went through every step: {weights:?}"
        );
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.2"),
            "the fix is promoted"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
