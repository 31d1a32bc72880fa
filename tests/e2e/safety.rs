//! Traffic never goes to a backend with no ready pods: not when a canary stops being
//! ready in the middle of its analysis, and not when a Canary adopts a Service that
//! already serves users. The traffic simulator counts every request it routes to a
//! Deployment without a ready replica; each scenario ends by checking it counted none.
//!
//! How the tests make pods unready on kwok's simulated nodes, where no kubelet runs:
//! - A pod that stops being ready gets `Ready=False` written through the pods/status
//!   subresource, as the kubelet writes it when a readiness probe fails
//!   ([`Rollout::set_pods_ready`]). kwok sets a pod's status once, in its `pod-ready`
//!   stage, which selects only pods without `.status.podIP`; a running pod has one, so
//!   kwok never flips the condition back. The tests check it: the Deployment keeps
//!   reporting no ready replica for as long as they expect it to.
//! - A primary that is slow to start has its pods held back by a scheduling gate on the
//!   pod template (the primary is a copy of it), which the test opens after a few
//!   seconds ([`Rollout::open_scheduling_gates`]): until then the pods are Pending and
//!   not Ready, as pods waiting for a node would be. A gate, unlike a status kwok is told
//!   to disregard, leaves the rest of the pod's life (Running, Ready, deletion) to kwok.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use serde_json::{Value, json};
use serin::api::CanaryPhase;

use crate::fixture::{IMAGE, Rollout, canary_spec, podinfo};
use crate::harness::{eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(60);
/// How soon an unready canary must lose its traffic: one reconcile.
const AT_ONCE: Duration = Duration::from_secs(3);
/// The pods of the target, which serves as the canary.
const CANARY_PODS: &str = "app=podinfo";
const PRIMARY_PODS: &str = "app=podinfo-primary";
/// The weight the canary holds for a whole analysis interval when its pods stop being
/// ready.
const FIRST_STEP: u64 = 30;
/// The error rate of every podinfo release in these scenarios (healthy).
const ERROR_RATE: f64 = 0.001;

/// A Canary whose analysis holds each step for 20s (30%, then 50%), so that the canary
/// can stop being ready and recover between two steps.
fn slow_steps_canary(progress_deadline_seconds: u32) -> Value {
    let mut spec = canary_spec(5);
    let analysis = spec["spec"]["analysis"].as_object_mut().unwrap();
    analysis.remove("stepWeight");
    analysis.insert("stepWeights".into(), json!([FIRST_STEP, 50]));
    analysis.insert("interval".into(), json!("20s"));
    spec["spec"]["progressDeadlineSeconds"] = json!(progress_deadline_seconds);
    spec
}

/// Releases a healthy podinfo 6.0.1 and waits until the canary serves the first step.
async fn canary_serves_its_first_step(rollout: &Rollout, progress_deadline_seconds: u32) {
    rollout
        .apply_app("kustomize-controller", "6.0.0", ERROR_RATE, 40.0)
        .await;
    rollout
        .apply(
            "kustomize-controller",
            &slow_steps_canary(progress_deadline_seconds),
        )
        .await;
    rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
    rollout
        .apply_app("kustomize-controller", "6.0.1", ERROR_RATE, 40.0)
        .await;
    rollout
        .await_phase(CanaryPhase::Progressing, Duration::from_secs(10))
        .await;
    virtual_service_routes(rollout, "the canary's first step", SETTLE, |w| {
        w == FIRST_STEP
    })
    .await;
}

/// Waits until the live VirtualService routes to the canary a weight `accept` takes, and
/// returns it; reports the weights it routed instead if that does not happen in time.
async fn virtual_service_routes(
    rollout: &Rollout,
    what: &str,
    timeout: Duration,
    accept: impl Fn(u64) -> bool,
) -> u64 {
    eventually(
        &format!("the VirtualService to route {what}"),
        timeout,
        || async {
            match rollout.vs_weights().await {
                Some((_, canary)) if accept(canary) => Ok(canary),
                Some((primary, canary)) => Err(format!(
                    "primary {primary}, canary {canary}; Canary status: {:?}",
                    rollout.canary().await.status.and_then(|s| s.message)
                )),
                None => Err("no primary/canary split".to_string()),
            }
        },
    )
    .await
}

/// Makes every canary pod unready while the simulated users are paused (the caller
/// resumes them once the route has reacted): a real mesh would send requests to the
/// canary for as long as the controller takes to react, however fast it is, so the
/// invariant is checked on what the controller routes, and the reaction time is
/// measured and printed. Returns when the pods were made unready.
async fn the_canary_pods_stop_being_ready(rollout: &Rollout) -> Instant {
    rollout.pause_users().await;
    let pods = rollout.set_pods_ready(CANARY_PODS, false).await;
    let since = Instant::now();
    assert_eq!(pods, 2, "the canary runs 2 pods");
    eventually(
        "the canary Deployment to report no ready replica",
        Duration::from_secs(10),
        || async {
            match rollout.ready_replicas("podinfo").await {
                0 => Ok(()),
                n => Err(format!("{n} ready replicas")),
            }
        },
    )
    .await;
    since
}

/// For `period`, checks that the unready canary gets no traffic, that its pods stay
/// unready (nothing flips them back), and that the release is still in progress.
async fn the_canary_stays_off_while_unready(rollout: &Rollout, period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        assert_eq!(
            rollout.vs_weights().await,
            Some((100, 0)),
            "the unready canary gets no traffic"
        );
        assert_eq!(
            rollout.ready_replicas("podinfo").await,
            0,
            "the canary's pods stay unready"
        );
        let status = rollout.canary().await.status.unwrap_or_default();
        assert_eq!(
            status.phase,
            CanaryPhase::Progressing,
            "the release is still in progress while the canary may recover: {:?}",
            status.message
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_canary_that_stops_being_ready_loses_its_traffic_at_once_and_gets_it_back() {
    with_namespace("e2e-unready", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        canary_serves_its_first_step(&rollout, 60).await;

        let unready = the_canary_pods_stop_being_ready(&rollout).await;
        virtual_service_routes(&rollout, "no traffic to the unready canary", AT_ONCE, |w| {
            w == 0
        })
        .await;
        rollout.resume_users();
        println!(
            "the canary lost its traffic {:?} after its pods stopped being ready",
            unready.elapsed()
        );
        the_canary_stays_off_while_unready(&rollout, Duration::from_secs(6)).await;

        let recovered = Instant::now();
        rollout.set_pods_ready(CANARY_PODS, true).await;
        let weight = virtual_service_routes(
            &rollout,
            "the recovered canary its traffic again",
            Duration::from_secs(10),
            |w| w >= FIRST_STEP,
        )
        .await;
        println!(
            "the canary got weight {weight} back {:?} after its pods were ready again",
            recovered.elapsed()
        );

        rollout
            .await_phase(CanaryPhase::Succeeded, Duration::from_secs(120))
            .await;
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.1"),
            "the release that recovered is promoted"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
        println!(
            "unready-and-recovered scenario took {:?}",
            rollout.elapsed()
        );
    })
    .await;
}

/// The progress deadline of the scenario below.
const DEADLINE: Duration = Duration::from_secs(15);

/// The time left, less a second's margin, until `deadline` passes from the canary's last
/// analysis step (when it was last seen ready).
async fn time_left_before_the_deadline(rollout: &Rollout, deadline: Duration) -> Duration {
    let status = rollout.canary().await.status.unwrap_or_default();
    let last_ready = status.last_analysis_time.expect("the canary took a step").0;
    let since = jiff::Timestamp::now()
        .duration_since(last_ready)
        .unsigned_abs();
    deadline
        .saturating_sub(since)
        .saturating_sub(Duration::from_secs(1))
}

#[tokio::test]
async fn a_canary_that_does_not_recover_within_the_progress_deadline_is_rolled_back() {
    with_namespace("e2e-unready-deadline", |client, ns| async move {
        let rollout = Rollout::start(client, &ns).await;
        canary_serves_its_first_step(&rollout, DEADLINE.as_secs() as u32).await;

        let unready = the_canary_pods_stop_being_ready(&rollout).await;
        virtual_service_routes(&rollout, "no traffic to the unready canary", AT_ONCE, |w| {
            w == 0
        })
        .await;
        rollout.resume_users();
        // The deadline counts from the step the canary was last seen ready at; how much
        // of it the steps above used depends on the machine, so the release is checked to
        // stay in progress until shortly before it ends, however long that is.
        let before_deadline = time_left_before_the_deadline(&rollout, DEADLINE).await;
        the_canary_stays_off_while_unready(&rollout, before_deadline).await;
        println!("the release stayed in progress for {before_deadline:?} while unready");

        let canary = rollout
            .await_phase(CanaryPhase::Failed, Duration::from_secs(30))
            .await;
        println!(
            "rolled back {:?} after the canary stopped being ready",
            unready.elapsed()
        );
        let message = canary.status.unwrap().message.unwrap_or_default();
        assert!(
            message.contains("progress deadline"),
            "the status says the canary missed its progress deadline: {message}"
        );
        rollout
            .await_weights((100, 0), "all traffic is on the primary")
            .await;
        rollout
            .await_replicas("podinfo", 0, "the canary is scaled to 0")
            .await;
        assert_eq!(
            Rollout::image(&rollout.deployment("podinfo-primary").await),
            format!("{IMAGE}:6.0.0"),
            "nothing was promoted"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
        println!(
            "unready-past-deadline scenario took {:?}",
            rollout.elapsed()
        );
    })
    .await;
}

/// How long the primary's first pods are held back from starting.
const PRIMARY_START: Duration = Duration::from_secs(5);

/// podinfo as its user deploys it, with a scheduling gate on its pod template: the test
/// opens it at once for the user's own pods, and a few seconds late for the primary's
/// (a copy of the template), so that the primary is slow to become ready.
fn podinfo_with_a_scheduling_gate() -> Value {
    let mut deployment = podinfo("6.0.0", ERROR_RATE, 40.0, None);
    deployment["spec"]["template"]["spec"]["schedulingGates"] =
        json!([{"name": "serin.dev/e2e-slow-start"}]);
    deployment
}

/// The Service `podinfo` in front of the app, as the user has it.
fn users_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "podinfo"},
        "spec": {
            "selector": {"app": "podinfo"},
            "ports": [{"name": "http", "port": 9898, "targetPort": 9898}]
        }
    })
}

/// The VirtualService `podinfo` the user routes through: all traffic to `podinfo`.
fn users_virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "podinfo"},
        "spec": {
            "hosts": ["podinfo"],
            "http": [{"route": [{"destination": {"host": "podinfo"}}]}]
        }
    })
}

/// Requests the simulator has seen `workload` answer so far.
async fn requests_answered_by(rollout: &Rollout, workload: &str) -> f64 {
    rollout
        .sim_samples("istio_requests_total")
        .await
        .iter()
        .filter(|s| s.label("destination_workload") == workload)
        .map(|s| s.value)
        .sum()
}

/// Waits until `workload` answers more of the users' requests.
async fn users_are_served_by(rollout: &Rollout, workload: &str) {
    let before = requests_answered_by(rollout, workload).await;
    eventually(
        &format!("{workload} to answer the users' requests"),
        Duration::from_secs(30),
        || async {
            let now = requests_answered_by(rollout, workload).await;
            if now > before {
                Ok(())
            } else {
                Err(format!("{now} requests answered by {workload}"))
            }
        },
    )
    .await;
}

/// Checks that requests failed no more often than the app's configured error rate
/// allows, counting as failed each request sent to a backend without ready pods (a mesh
/// answers it with a 503).
async fn no_request_failed_beyond_the_error_rate(rollout: &Rollout) {
    let answered = rollout.sim_samples("istio_requests_total").await;
    let errors: f64 = answered
        .iter()
        .filter(|s| s.label("response_code").starts_with('5'))
        .map(|s| s.value)
        .sum();
    let dropped: f64 = rollout
        .sim_samples("serin_sim_unready_requests_total")
        .await
        .iter()
        .map(|s| s.value)
        .sum();
    let sent = answered.iter().map(|s| s.value).sum::<f64>() + dropped;
    let expected = sent * ERROR_RATE;
    // The configured rate plus five standard deviations of its noise.
    let allowed = expected + 5.0 * expected.sqrt().max(1.0);
    assert!(
        errors + dropped <= allowed,
        "{} of {sent} requests failed ({errors} errors, {dropped} sent to a backend without \
         ready pods); the error rate {ERROR_RATE} accounts for at most {allowed:.0}",
        errors + dropped
    );
}

#[tokio::test]
async fn adopting_a_service_that_already_serves_traffic_drops_no_request() {
    with_namespace("e2e-adopt", |client, ns| async move {
        let rollout = Rollout::start(client.clone(), &ns).await;
        rollout
            .apply("kustomize-controller", &podinfo_with_a_scheduling_gate())
            .await;
        rollout.open_scheduling_gates(CANARY_PODS, 2).await;
        rollout
            .apply("kustomize-controller", &users_service())
            .await;
        rollout
            .apply("kustomize-controller", &users_virtual_service())
            .await;
        users_are_served_by(&rollout, "podinfo").await;

        rollout.apply("kustomize-controller", &canary_spec(2)).await;
        eventually("the primary's pods to be created", SETTLE, || async {
            match rollout.pods(PRIMARY_PODS).await.len() {
                2 => Ok(()),
                n => Err(format!("{n} pods")),
            }
        })
        .await;
        tokio::time::sleep(PRIMARY_START).await;
        assert_eq!(
            rollout.ready_replicas("podinfo-primary").await,
            0,
            "the primary is not ready yet"
        );
        assert_eq!(
            rollout.canary().await.status.unwrap_or_default().phase,
            CanaryPhase::Initializing,
            "the Canary waits for its primary"
        );
        rollout.open_scheduling_gates(PRIMARY_PODS, 2).await;

        rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
        rollout
            .await_weights(
                (100, 0),
                "the VirtualService routes 100% to podinfo-primary",
            )
            .await;
        let services: Api<Service> = Api::namespaced(client, &ns);
        let apex = services.get("podinfo").await.unwrap();
        assert_eq!(
            apex.spec.unwrap().selector.unwrap_or_default().get("app"),
            Some(&"podinfo-primary".to_string()),
            "the Service podinfo selects the primary's pods (written before the route)"
        );
        users_are_served_by(&rollout, "podinfo-primary").await;

        rollout.assert_no_request_reached_an_unready_backend().await;
        no_request_failed_beyond_the_error_rate(&rollout).await;
        println!("adoption scenario took {:?}", rollout.elapsed());
    })
    .await;
}
