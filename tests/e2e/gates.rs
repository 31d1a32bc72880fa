//! Gates end to end: Flagger's webhooks called by the controller against a webhook
//! receiver in the test process, with Flagger's payload; gate services holding and then
//! releasing a rollout; failing checks, rollback requests and post-rollout failures; and a
//! webhook that hangs to its timeout without slowing another Canary down.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, http::Uri};
use k8s_openapi::api::events::v1::Event;
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use serin::api::{Canary, CanaryPhase};

use crate::fixture::{Rollout, canary_spec, podinfo};
use crate::harness::{eventually, with_namespace};

const SETTLE: Duration = Duration::from_secs(90);

/// One call the receiver got.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub payload: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Answers {
    codes: HashMap<String, u16>,
    delays: HashMap<String, Duration>,
    calls: Vec<Call>,
}

/// A webhook receiver: answers each path with the code set for it (200 by default),
/// after the delay set for it, and records every payload.
#[derive(Clone, Default)]
pub struct Receiver {
    state: Arc<Mutex<Answers>>,
    pub url: String,
}

async fn answer(State(r): State<Receiver>, uri: Uri, body: Bytes) -> (StatusCode, String) {
    let path = uri.path().to_string();
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (code, delay) = {
        let mut s = r.state.lock().unwrap();
        s.calls.push(Call {
            path: path.clone(),
            payload,
            at: Instant::now(),
        });
        (
            s.codes.get(&path).copied().unwrap_or(200),
            s.delays.get(&path).copied(),
        )
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let code = StatusCode::from_u16(code).unwrap();
    let text = if code.is_success() {
        "Approved".to_string()
    } else {
        format!("{path} says {}", code.as_u16())
    };
    (code, text)
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            url: format!("http://{}", listener.local_addr().unwrap()),
            ..Receiver::default()
        };
        let app = Router::new().fallback(answer).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub fn set(&self, path: &str, code: u16) {
        self.state.lock().unwrap().codes.insert(path.into(), code);
    }

    pub fn delay(&self, path: &str, delay: Duration) {
        self.state.lock().unwrap().delays.insert(path.into(), delay);
    }

    pub fn calls(&self, path: &str) -> Vec<Call> {
        let s = self.state.lock().unwrap();
        s.calls.iter().filter(|c| c.path == path).cloned().collect()
    }

    pub fn hook(&self, name: &str, kind: &str, path: &str) -> Value {
        json!({"name": name, "type": kind, "url": format!("{}{path}", self.url), "timeout": "5s"})
    }
}

fn with_webhooks(mut spec: Value, hooks: Vec<Value>) -> Value {
    spec["spec"]["analysis"]["webhooks"] = Value::Array(hooks);
    spec
}

pub(crate) async fn settle(rollout: &Rollout, spec: &Value) {
    rollout
        .apply_app("kustomize-controller", "6.0.0", 0.001, 40.0)
        .await;
    rollout.apply("kustomize-controller", spec).await;
    rollout.await_phase(CanaryPhase::Initialized, SETTLE).await;
}

fn assert_flagger_payload(call: &Call, ns: &str, phase: &str) {
    let p = &call.payload;
    assert_eq!(p["name"], "podinfo", "{p}");
    assert_eq!(p["namespace"], ns, "{p}");
    assert_eq!(p["phase"], phase, "{}: {p}", call.path);
    assert!(p["checksum"].as_str().is_some_and(|c| !c.is_empty()), "{p}");
}

#[tokio::test]
async fn every_webhook_type_gets_flaggers_payload_and_a_gate_service_holds_then_releases_the_rollout()
 {
    with_namespace("e2e-hooks", |client, ns| async move {
        let hooks = Receiver::start().await;
        // Like flagger-loadtester's /gate/halt then /gate/approve: closed first.
        hooks.set("/gate/start", 403);
        hooks.set("/post", 500);
        hooks.set("/rollback", 404);
        let mut load = hooks.hook("load-test", "rollout", "/load");
        load["metadata"] = json!({"cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary:9898/"});
        let mut events = hooks.hook("events", "event", "/events");
        events["metadata"] = json!({"team": "checkout"});
        let spec = with_webhooks(
            canary_spec(2),
            vec![
                hooks.hook("start-gate", "confirm-rollout", "/gate/start"),
                hooks.hook("acceptance-test", "pre-rollout", "/pre"),
                load,
                hooks.hook("traffic-gate", "confirm-traffic-increase", "/gate/traffic"),
                hooks.hook("promotion-gate", "confirm-promotion", "/gate/promotion"),
                hooks.hook("rollback-gate", "rollback", "/rollback"),
                hooks.hook("notify", "post-rollout", "/post"),
                events,
            ],
        );
        let rollout = Rollout::start(client.clone(), &ns).await;
        settle(&rollout, &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;

        let waiting = rollout.await_phase(CanaryPhase::Waiting, SETTLE).await;
        let message = waiting.status.unwrap().message.unwrap_or_default();
        assert!(
            message.contains("start-gate answered 403"),
            "the reason is in status: {message}"
        );
        // Held: the gate is asked again every interval and nothing starts.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            rollout.canary().await.status.unwrap().phase,
            CanaryPhase::Waiting
        );
        assert!(hooks.calls("/gate/start").len() >= 2, "asked again");
        assert_eq!(Rollout::replicas(&rollout.deployment("podinfo").await), 0);
        assert!(
            hooks.calls("/pre").is_empty(),
            "no test before the gate opens"
        );

        hooks.set("/gate/start", 200);
        let done = rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        assert_eq!(
            done.status.unwrap().last_promoted_spec,
            rollout.canary().await.status.unwrap().last_applied_spec,
            "a post-rollout failure does not change the outcome"
        );

        let first_traffic = rollout
            .events()
            .await
            .into_iter()
            .any(|(_, reason, _)| reason == "Advanced");
        assert!(first_traffic);
        for (path, phase) in [
            ("/gate/start", "Progressing"),
            ("/pre", "Progressing"),
            ("/load", "Progressing"),
            ("/gate/traffic", "Progressing"),
            ("/gate/promotion", "Progressing"),
            ("/rollback", "Progressing"),
        ] {
            let calls = hooks.calls(path);
            assert!(!calls.is_empty(), "{path} was called");
            assert_flagger_payload(&calls[0], &ns, phase);
        }
        assert_eq!(
            hooks.calls("/load")[0].payload["metadata"]["cmd"],
            "hey -z 1m -q 10 -c 2 http://podinfo-canary:9898/"
        );
        // The pre-rollout test ran before the first traffic step.
        let pre = hooks.calls("/pre")[0].at;
        let load = hooks.calls("/load")[0].at;
        assert!(pre < load);
        let post = eventually("the post-rollout call", Duration::from_secs(10), || async {
            hooks
                .calls("/post")
                .first()
                .cloned()
                .ok_or_else(|| "not yet".to_string())
        })
        .await;
        assert_flagger_payload(&post, &ns, "Succeeded");
        assert_eq!(hooks.calls("/post").len(), 1, "called once");

        let events = eventually(
            "the Succeeded event webhook",
            Duration::from_secs(10),
            || async {
                let calls = hooks.calls("/events");
                if calls.iter().any(|c| {
                    c.payload["metadata"]["eventMessage"]
                        .as_str()
                        .unwrap_or("")
                        .contains("Promotion of")
                }) {
                    Ok(calls)
                } else {
                    Err(format!("{} event calls", calls.len()))
                }
            },
        )
        .await;
        let e = &events[0].payload;
        assert!(e["metadata"]["eventType"] == "Normal" || e["metadata"]["eventType"] == "Warning");
        assert!(
            e["metadata"]["timestamp"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert_eq!(e["metadata"]["team"], "checkout");
        let recorded = rollout.events().await.len();
        assert!(
            events.len() <= recorded,
            "one event webhook call per event: {} calls, {recorded} events",
            events.len()
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_failing_pre_rollout_webhook_counts_as_failed_checks_and_rolls_back_before_any_traffic() {
    with_namespace("e2e-prehook", |client, ns| async move {
        let hooks = Receiver::start().await;
        hooks.set("/pre", 500);
        let spec = with_webhooks(
            canary_spec(2),
            vec![hooks.hook("acceptance-test", "pre-rollout", "/pre")],
        );
        let rollout = Rollout::start(client, &ns).await;
        settle(&rollout, &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        let weights = rollout
            .record_weights_until(CanaryPhase::Failed, SETTLE)
            .await;
        assert!(
            weights.iter().all(|w| *w == 0),
            "no traffic before the pre-rollout test passes: {weights:?}"
        );
        let status = rollout.canary().await.status.unwrap();
        let message = status.message.unwrap_or_default();
        assert!(
            message.contains("failed checks threshold reached 2/2")
                && message.contains("acceptance-test answered 500"),
            "{message}"
        );
        assert_eq!(hooks.calls("/pre").len(), 2, "one call per failed check");
        let events = rollout.await_event("RolledBack").await;
        assert!(
            events
                .iter()
                .any(|(_, r, n)| r == "CheckFailed" && n.contains("Pre-rollout check failed")),
            "{events:?}"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_rollback_webhook_answering_200_rolls_back_now() {
    with_namespace("e2e-rbhook", |client, ns| async move {
        let hooks = Receiver::start().await;
        hooks.set("/rollback", 404);
        hooks.set("/gate/promotion", 403);
        let spec = with_webhooks(
            canary_spec(2),
            vec![
                hooks.hook("rollback-gate", "rollback", "/rollback"),
                hooks.hook("promotion-gate", "confirm-promotion", "/gate/promotion"),
            ],
        );
        let rollout = Rollout::start(client, &ns).await;
        settle(&rollout, &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        // The promotion gate holds the canary at maxWeight while the checks run.
        let waiting = rollout
            .await_phase(CanaryPhase::WaitingPromotion, SETTLE)
            .await;
        assert!(
            waiting
                .status
                .unwrap()
                .message
                .unwrap_or_default()
                .contains("promotion-gate answered 403")
        );
        rollout
            .await_weights((50, 50), "the canary keeps its traffic")
            .await;
        let asked = Instant::now();
        hooks.set("/rollback", 200);
        let failed = rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(5), "rolled back within {took:?}");
        assert!(
            failed
                .status
                .unwrap()
                .message
                .unwrap_or_default()
                .contains("rollback requested by webhook rollback-gate")
        );
        rollout
            .await_weights((100, 0), "all traffic back to the primary")
            .await;
        println!("rollback webhook: rolled back {took:?} after it answered 200");
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

/// Flagger's own tutorial shapes: an acceptance test as a `pre-rollout` webhook and a
/// load test as a `rollout` webhook, exactly as in Flagger's docs (only the receiver's
/// address differs), and the webhook latency added per step.
#[tokio::test]
async fn flaggers_tutorial_webhooks_work_unchanged_and_add_little_latency_per_step() {
    with_namespace("e2e-tutorial", |client, ns| async move {
        let hooks = Receiver::start().await;
        let tutorial = json!([
            {
                "name": "acceptance-test",
                "type": "pre-rollout",
                "url": format!("{}/", hooks.url),
                "timeout": "30s",
                "metadata": {"type": "bash", "cmd": "curl -sd 'test' http://podinfo-canary:9898/token | grep token"}
            },
            {
                "name": "load-test",
                "url": format!("{}/", hooks.url),
                "timeout": "5s",
                "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"}
            }
        ]);
        let mut spec = canary_spec(2);
        spec["spec"]["analysis"]["webhooks"] = tutorial;
        let rollout = Rollout::start(client, &ns).await;
        settle(&rollout, &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        let calls = hooks.calls("/");
        let kinds: Vec<&str> = calls
            .iter()
            .map(|c| c.payload["metadata"]["cmd"].as_str().unwrap_or(""))
            .collect();
        assert!(kinds[0].starts_with("curl"), "acceptance test first: {kinds:?}");
        assert!(kinds.iter().skip(1).all(|k| k.starts_with("hey")), "{kinds:?}");
        assert!(calls.len() >= 5, "one load-test call per analysis round: {}", calls.len());
        let log = std::fs::read_to_string(&rollout.serin.as_ref().unwrap().log).unwrap();
        let latencies: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("webhook passed"))
            .filter_map(|l| {
                l.split("latency_ms=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        assert!(!latencies.is_empty(), "latency logged");
        let max = latencies.iter().max().unwrap();
        let mean = latencies.iter().sum::<u64>() as f64 / latencies.len() as f64;
        println!(
            "webhook latency per step: {} calls, mean {mean:.1} ms, max {max} ms",
            latencies.len()
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

/// A second Canary in the same namespace (the same controller) keeps stepping once per
/// interval while the first one's `rollout` webhook hangs to its timeout.
#[tokio::test]
async fn a_webhook_hanging_to_its_timeout_does_not_delay_another_canary() {
    with_namespace("e2e-hang", |client, ns| async move {
        let hooks = Receiver::start().await;
        hooks.delay("/hang", Duration::from_secs(30));
        let mut hanging = hooks.hook("slow-load-test", "rollout", "/hang");
        hanging["timeout"] = json!("8s");
        let spec = with_webhooks(canary_spec(5), vec![hanging]);
        let rollout = Rollout::start(client.clone(), &ns).await;
        settle(&rollout, &spec).await;

        // The other Canary: its own app, no metrics, 1s steps of 10 up to 50.
        let mut other_app = podinfo("6.0.0", 0.0, 10.0, None);
        other_app["metadata"]["name"] = json!("other");
        other_app["metadata"]["labels"] = json!({"app": "other"});
        other_app["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        other_app["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
        rollout.apply("kustomize-controller", &other_app).await;
        let mut other = canary_spec(1);
        other["metadata"]["name"] = json!("other");
        other["spec"]["targetRef"]["name"] = json!("other");
        other["spec"]["analysis"]["metrics"] = json!([]);
        rollout.apply("kustomize-controller", &other).await;
        let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
        let phase_of = |name: &'static str| {
            let canaries = canaries.clone();
            async move {
                canaries
                    .get(name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .map(|s| s.phase)
            }
        };
        eventually("the other Canary initialized", SETTLE, || async {
            match phase_of("other").await {
                Some(CanaryPhase::Initialized) => Ok(()),
                p => Err(format!("{p:?}")),
            }
        })
        .await;

        // podinfo's analysis now waits 8s on its hanging webhook at every round.
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        eventually("podinfo's webhook hanging", SETTLE, || async {
            if hooks.calls("/hang").is_empty() {
                Err("not called yet".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        let mut other_app = other_app.clone();
        other_app["spec"]["template"]["metadata"]["annotations"]["release"] = json!("2");
        let started = Instant::now();
        rollout.apply("kustomize-controller", &other_app).await;
        eventually("the other Canary promoted", SETTLE, || async {
            match phase_of("other").await {
                Some(CanaryPhase::Succeeded) => Ok(()),
                p => Err(format!("{p:?}")),
            }
        })
        .await;
        let took = started.elapsed();
        // Five steps of 1s, promotion and finalising: about 8s with nothing in the way;
        // a hang shared with podinfo would add 8s per step.
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let advanced: Vec<_> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("other")
                    && e.reason.as_deref() == Some("Advanced")
            })
            .filter_map(|e| e.event_time.map(|t| t.0))
            .collect();
        let mut times = advanced.clone();
        times.sort();
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_secs_f64())
            .collect();
        println!(
            "while podinfo's webhook hung 8s per round: the other Canary released in {took:?}, steps apart {gaps:?}"
        );
        assert!(
            gaps.iter().all(|g| *g < 4.0),
            "the other Canary's steps are not held by the hanging webhook: {gaps:?}"
        );
        assert_eq!(
            phase_of("podinfo").await,
            Some(CanaryPhase::Progressing),
            "podinfo is still analysing"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

/// A conformance test whose pod kwok completes after `delay` (the `pod-complete` stage of
/// tests/e2e/kwok-stages.yaml), or fails with `serin.dev/e2e-fail` in `pod_annotations`.
pub(crate) fn conformance_test(name: &str, delay: &str, pod_annotations: Value) -> Value {
    let mut annotations = pod_annotations;
    annotations["pod-complete.stage.kwok.x-k8s.io/delay"] = json!(delay);
    json!({
        "name": name,
        "timeout": "2m",
        "template": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{"name": name, "image": "curlimages/curl", "args": ["-fsS", "$(SERIN_CANARY_ADDRESS)/healthz"]}]}
            }
        }
    })
}

/// The environment of a Job's first container, as set by serin.
pub(crate) fn job_env(
    job: &k8s_openapi::api::batch::v1::Job,
) -> std::collections::BTreeMap<String, String> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect()
}

pub(crate) async fn jobs_of(
    client: &kube::Client,
    ns: &str,
) -> Vec<k8s_openapi::api::batch::v1::Job> {
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), ns);
    jobs.list(&ListParams::default().labels("serin.dev/canary=podinfo"))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_conformance_job_that_exits_0_lets_traffic_start_and_one_that_fails_rolls_back_quoting_it()
 {
    with_namespace("e2e-jobs", |client, ns| async move {
        let mut spec = canary_spec(2);
        spec["spec"]["analysis"]["conformanceTests"] =
            json!([conformance_test("smoke", "1s", json!({}))]);
        let rollout = Rollout::start(client.clone(), &ns).await;
        settle(&rollout, &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        let weights = rollout
            .record_weights_until(CanaryPhase::Succeeded, SETTLE)
            .await;
        assert!(weights.contains(&10), "traffic started: {weights:?}");
        let jobs = jobs_of(&client, &ns).await;
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        let revision = rollout
            .canary()
            .await
            .status
            .unwrap()
            .last_applied_spec
            .unwrap();
        assert_eq!(
            job.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Canary"
        );
        let env: Vec<(String, String)> = job_env(job).into_iter().collect();
        assert!(
            env.contains(&(
                "SERIN_CANARY_ADDRESS".into(),
                format!("http://podinfo-canary.{ns}:9898")
            )),
            "{env:?}"
        );
        assert!(env.contains(&(
            "SERIN_PRIMARY_ADDRESS".into(),
            format!("http://podinfo-primary.{ns}:9898")
        )));
        assert!(env.contains(&("SERIN_REVISION".into(), revision.clone())));
        assert!(env.contains(&("SERIN_NAMESPACE".into(), ns.clone())));
        let first_job = job.metadata.name.clone().unwrap();

        // The next release's test fails: kwok's `pod-fail` stage (tests/e2e/kwok-stages.yaml)
        // ends its pod with exit code 1 and this termination message, as a kubelet reports
        // a curl that got a 503; the real Job controller then fails the Job.
        spec["spec"]["analysis"]["conformanceTests"] = json!([conformance_test(
            "smoke",
            "1s",
            json!({"serin.dev/e2e-fail": "GET /healthz: 503 Service Unavailable"})
        )]);
        rollout.apply("kustomize-controller", &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.001, 40.0)
            .await;
        let failed = rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
        let message = failed.status.unwrap().message.unwrap_or_default();
        assert!(
            message.contains("conformance test smoke failed")
                && message.contains("GET /healthz: 503 Service Unavailable"),
            "{message}"
        );
        let events = rollout.await_event("RolledBack").await;
        assert!(
            events
                .iter()
                .any(|(_, r, n)| r == "RolledBack" && n.contains("GET /healthz: 503")),
            "{events:?}"
        );
        rollout
            .await_weights((100, 0), "no traffic to the failed canary")
            .await;
        let names: Vec<String> = jobs_of(&client, &ns)
            .await
            .into_iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter_map(|j| j.metadata.name)
            .collect();
        assert!(
            !names.contains(&first_job),
            "the older revision's Job is cleaned up: {names:?}"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

#[tokio::test]
async fn a_controller_killed_while_a_job_runs_does_not_start_a_second_job() {
    with_namespace("e2e-jobkill", |client, ns| async move {
        let mut spec = canary_spec(2);
        spec["spec"]["analysis"]["conformanceTests"] =
            json!([conformance_test("smoke", "12s", json!({}))]);
        let mut rollout = Rollout::start(client.clone(), &ns).await;
        settle(&rollout, &spec).await;
        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        eventually("the test's Job", SETTLE, || async {
            if jobs_of(&client, &ns).await.is_empty() {
                Err("no Job yet".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        rollout.kill_controller().await;
        let running = jobs_of(&client, &ns).await;
        assert!(
            running.iter().all(|j| j
                .status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .is_none()),
            "the controller was killed while its Job ran: {:?}",
            running.iter().map(|j| &j.status).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        rollout.start_controller();
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;
        let jobs = jobs_of(&client, &ns).await;
        assert_eq!(jobs.len(), 1, "one Job for the revision");
        let pods = rollout.pods("serin.dev/conformance-test=smoke").await;
        assert_eq!(pods.len(), 1, "one run of the test");
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}

async fn serin(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn revision_of(rollout: &Rollout) -> String {
    rollout
        .canary()
        .await
        .status
        .unwrap()
        .last_applied_spec
        .unwrap()
}

#[tokio::test]
async fn serin_approve_opens_the_promotion_gate_of_the_current_revision_only_and_serin_abort_rolls_back()
 {
    with_namespace("e2e-cli", |client, ns| async move {
        let mut spec = canary_spec(2);
        spec["spec"]["approvals"] = json!({"promotion": true});
        let rollout = Rollout::start(client.clone(), &ns).await;
        settle(&rollout, &spec).await;

        // `serin status --watch`, not on a terminal: one plain line per change.
        let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_serin"))
            .args(["status", "podinfo", "-n", &ns, "--watch"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        rollout
            .apply_app("kustomize-controller", "6.0.1", 0.001, 40.0)
            .await;
        rollout
            .await_phase(CanaryPhase::WaitingPromotion, SETTLE)
            .await;
        let older = revision_of(&rollout).await;
        let (ok, list, _) = serin(&["list", "-n", &ns]).await;
        assert!(ok);
        let line = list.lines().find(|l| l.starts_with("podinfo")).unwrap();
        assert!(
            line.contains("WaitingPromotion")
                && line.contains("50%")
                && line.contains(&older[..12])
                && line.contains("serin approve podinfo --gate promotion"),
            "{list}"
        );

        // A newer revision restarts the analysis; the approval of the older one, written
        // by hand, does not open its gate, and the CLI refuses to write it.
        rollout
            .apply_app("kustomize-controller", "6.0.2", 0.001, 40.0)
            .await;
        eventually(
            "the newer revision waiting for promotion",
            SETTLE,
            || async {
                let s = rollout.canary().await.status.unwrap();
                if s.phase == CanaryPhase::WaitingPromotion
                    && s.last_applied_spec.as_deref() != Some(older.as_str())
                {
                    Ok(())
                } else {
                    Err(format!("{} {:?}", s.phase, s.last_applied_spec))
                }
            },
        )
        .await;
        let (ok, _, stderr) = serin(&["approve", "podinfo", "-n", &ns, "--revision", &older]).await;
        assert!(!ok && stderr.contains("no longer current"), "{stderr}");
        let canaries: Api<Canary> = Api::namespaced(client.clone(), &ns);
        canaries
            .patch(
                "podinfo",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"metadata": {"annotations": {"serin.dev/approve-promotion": older}}}),
                ),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            rollout.canary().await.status.unwrap().phase,
            CanaryPhase::WaitingPromotion,
            "an approval of an older revision does not open the gate"
        );
        let (ok, out, stderr) = serin(&["approve", "podinfo", "-n", &ns]).await;
        assert!(ok, "{stderr}");
        assert!(out.contains("serin.dev/approve-promotion="), "{out}");
        rollout.await_phase(CanaryPhase::Succeeded, SETTLE).await;

        // `serin abort` rolls back within one interval.
        rollout
            .apply_app("kustomize-controller", "6.0.3", 0.001, 40.0)
            .await;
        eventually("the next release under analysis", SETTLE, || async {
            let s = rollout.canary().await.status.unwrap();
            if s.phase == CanaryPhase::Progressing && s.canary_weight > 0 {
                Ok(())
            } else {
                Err(format!("{} {}", s.phase, s.canary_weight))
            }
        })
        .await;
        let aborted = Instant::now();
        let (ok, _, stderr) = serin(&["abort", "podinfo", "-n", &ns]).await;
        assert!(ok, "{stderr}");
        rollout.await_phase(CanaryPhase::Failed, SETTLE).await;
        let took = aborted.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "rolled back {took:?} after serin abort"
        );
        println!("serin abort: Failed {took:?} after the command");

        let (ok, status, _) = serin(&["status", "podinfo", "-n", &ns]).await;
        assert!(ok && status.contains("phase:     Failed"), "{status}");

        // `serin history`: what ran and what was rolled back, from status.
        let (ok, history, stderr) = serin(&["history", "podinfo", "-n", &ns]).await;
        assert!(ok, "{stderr}");
        println!("serin history:\n{history}");
        let release = |tag: &str| {
            history
                .lines()
                .find(|l| l.contains(&format!("podinfo:{tag}")))
                .unwrap_or_else(|| panic!("no release of {tag} in:\n{history}"))
                .to_string()
        };
        assert!(release("6.0.2").contains("Succeeded"), "{history}");
        let aborted_release = release("6.0.3");
        assert!(
            aborted_release.contains("Failed") && aborted_release.contains("aborted"),
            "{history}"
        );

        watch.start_kill().unwrap();
        let out = watch.wait_with_output().await.unwrap();
        let lines = String::from_utf8_lossy(&out.stdout).into_owned();
        let position = |needle: &str| {
            lines
                .lines()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in the watch output:\n{lines}"))
        };
        let waiting = position("phase=WaitingPromotion");
        let succeeded = position("phase=Succeeded");
        let failed = position("phase=Failed");
        assert!(waiting < succeeded && succeeded < failed, "{lines}");
        assert!(
            lines.contains("waiting=serin_approve_podinfo_--gate_promotion"),
            "{lines}"
        );
        rollout.assert_no_request_reached_an_unready_backend().await;
    })
    .await;
}
