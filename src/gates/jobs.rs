//! Conformance tests as Kubernetes Jobs (`analysis.conformanceTests[]`): one Job per
//! test per revision, named deterministically and owned by the Canary, so a restarted
//! controller finds the Job it started instead of starting a second one. The Job's
//! containers learn where the canary and the primary are from their environment. What a
//! Job's status means is decided here, purely; the controller only creates, reads and
//! deletes.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::{Resource, ResourceExt, api::ObjectMeta};
use sha2::{Digest, Sha256};

use crate::api::{Canary, ConformanceTest};
use crate::rollout::plan::ConformanceRun;
use crate::rollout::verdict::Finding;

pub const CANARY_LABEL: &str = "serin.dev/canary";
pub const REVISION_LABEL: &str = "serin.dev/revision";
pub const TEST_LABEL: &str = "serin.dev/conformance-test";
pub const RUN_LABEL: &str = "serin.dev/conformance-run";

/// A label value can hold at most 63 characters.
fn label(value: &str) -> String {
    value.chars().take(63).collect()
}

/// The Job of `test` for `revision` and `run`: `<canary>-<test>-<hash>`, where the hash
/// covers the four, so the name is the same for every controller and every restart, and
/// new for a new revision or step. At most 63 characters (a Job's pods carry it in a
/// label).
pub fn job_name(canary: &str, test: &str, revision: &str, run: ConformanceRun) -> String {
    let key = match run {
        ConformanceRun::BeforeTraffic => format!("{canary}/{test}/{revision}"),
        other => format!("{canary}/{test}/{revision}/{}", other.name()),
    };
    let digest = Sha256::digest(key.as_bytes());
    let hash = hex::encode(&digest[..4]);
    let mut prefix: String = format!("{canary}-{test}");
    prefix.truncate(63 - hash.len() - 1);
    let prefix = prefix.trim_end_matches('-');
    format!("{prefix}-{hash}")
}

/// The environment every container of a test gets.
pub fn environment(canary: &Canary, revision: &str, run: ConformanceRun) -> Vec<EnvVar> {
    let ns = canary.namespace().unwrap_or_default();
    let port = canary.spec.service.port;
    let var = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        ..Default::default()
    };
    vec![
        var(
            "SERIN_CANARY_ADDRESS",
            format!("http://{}.{ns}:{port}", canary.spec.canary_service_name()),
        ),
        var(
            "SERIN_PRIMARY_ADDRESS",
            format!("http://{}.{ns}:{port}", canary.spec.primary_service_name()),
        ),
        var("SERIN_REVISION", revision.to_string()),
        var("SERIN_NAMESPACE", ns),
        var("SERIN_CONFORMANCE_RUN", run.name()),
    ]
}

/// The Job to create for `test`, `revision` and `run`.
pub fn desired(
    canary: &Canary,
    test: &ConformanceTest,
    revision: &str,
    run: ConformanceRun,
) -> Job {
    let name = canary.name_any();
    let labels = BTreeMap::from([
        (CANARY_LABEL.to_string(), label(&name)),
        (REVISION_LABEL.to_string(), label(revision)),
        (TEST_LABEL.to_string(), label(&test.name)),
        (RUN_LABEL.to_string(), label(&run.name())),
    ]);
    let mut spec = test.template.clone();
    // The timeout is the Job's deadline: the Job controller stops it and marks it failed.
    spec.active_deadline_seconds = Some(i64::try_from(test.timeout().as_secs()).unwrap_or(300));
    // One try unless the template asks for more: a failed test is a result, not a flake.
    spec.backoff_limit.get_or_insert(0);
    let env = environment(canary, revision, run);
    if let Some(pod) = spec.template.spec.as_mut() {
        for container in &mut pod.containers {
            let vars = container.env.get_or_insert_with(Vec::new);
            vars.retain(|v| !env.iter().any(|e| e.name == v.name));
            vars.extend(env.iter().cloned());
        }
        if pod.restart_policy.is_none() {
            pod.restart_policy = Some("Never".into());
        }
    }
    let template_labels = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    template_labels.extend(labels.clone());
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, &test.name, revision, run)),
            namespace: canary.namespace(),
            labels: Some(labels),
            owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Where one test stands.
#[derive(Clone, Debug, PartialEq)]
pub enum TestState {
    Running,
    Passed,
    /// Why it failed: the failing container's termination message when there is one.
    Failed(String),
}

/// The state of a Job from its conditions, and from its pods for the reason of a failure.
pub fn state(job: &Job, pods: &[Pod]) -> TestState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let holds = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete").is_some() {
        return TestState::Passed;
    }
    let Some(failed) = holds("Failed") else {
        return TestState::Running;
    };
    if failed.reason.as_deref() == Some("DeadlineExceeded") {
        let deadline = job
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .unwrap_or_default();
        return TestState::Failed(format!("did not finish within its timeout of {deadline}s"));
    }
    TestState::Failed(termination_message(pods).unwrap_or_else(|| {
        failed
            .message
            .clone()
            .unwrap_or_else(|| "the Job failed".to_string())
    }))
}

/// The termination message of the first container that failed, with its exit code.
pub fn termination_message(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .find_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            (t.exit_code != 0).then(|| {
                let message = t.message.as_deref().unwrap_or("").trim();
                if message.is_empty() {
                    format!("container {} exited with code {}", c.name, t.exit_code)
                } else {
                    format!(
                        "container {} exited with code {}: {message}",
                        c.name, t.exit_code
                    )
                }
            })
        })
}

/// All tests of a revision together: failed if one failed, passed when all passed.
pub fn outcome(tests: &[(String, TestState)]) -> crate::rollout::plan::Conformance {
    use crate::rollout::plan::Conformance;
    if tests.is_empty() {
        return Conformance::Passed;
    }
    if let Some((name, TestState::Failed(why))) = tests
        .iter()
        .find(|(_, s)| matches!(s, TestState::Failed(_)))
    {
        return Conformance::Failed(Finding::gate(
            name,
            format!("conformance test {name} failed: {why}"),
        ));
    }
    if tests.iter().all(|(_, s)| *s == TestState::Passed) {
        Conformance::Passed
    } else {
        Conformance::Running
    }
}

/// Whether a Job of this Canary belongs to an older revision (and is cleaned up).
pub fn is_stale(job: &Job, revision: &str) -> bool {
    job.labels().get(REVISION_LABEL).map(String::as_str) != Some(&label(revision))
}

/// Jobs are namespaced and owned by the Canary: its kind for owner checks.
pub fn owned_by(job: &Job, canary: &Canary) -> bool {
    let uid = canary.meta().uid.as_deref();
    job.owner_references()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus,
        PodTemplateSpec,
    };

    fn test_named(name: &str) -> ConformanceTest {
        ConformanceTest {
            name: name.into(),
            template: JobSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "smoke".into(),
                            image: Some("curl".into()),
                            env: Some(vec![EnvVar {
                                name: "SERIN_REVISION".into(),
                                value: Some("forged".into()),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
            timeout: Some("45s".into()),
            when: Vec::new(),
        }
    }

    #[test]
    fn a_job_name_is_deterministic_per_test_revision_and_step_and_fits_a_label() {
        let before = ConformanceRun::BeforeTraffic;
        let a = job_name("podinfo", "smoke", "abc", before);
        assert_eq!(a, job_name("podinfo", "smoke", "abc", before));
        assert!(a.starts_with("podinfo-smoke-"), "{a}");
        assert_ne!(a, job_name("podinfo", "smoke", "abd", before));
        assert_ne!(a, job_name("podinfo", "other", "abc", before));
        let steps = [10, 20].map(|w| job_name("podinfo", "smoke", "abc", ConformanceRun::Step(w)));
        assert_ne!(steps[0], steps[1], "one Job per step");
        assert!(!steps.contains(&a));
        assert_ne!(
            a,
            job_name("podinfo", "smoke", "abc", ConformanceRun::AfterPromotion)
        );
        let long = job_name(
            &"x".repeat(60),
            &"y".repeat(40),
            "abc",
            ConformanceRun::Step(100),
        );
        assert!(long.len() <= 63, "{long}");
    }

    #[test]
    fn the_job_is_owned_by_the_canary_times_out_and_tells_its_containers_where_to_go() {
        let mut canary = Canary::test();
        canary.metadata.uid = Some("uid-1".into());
        let job = desired(
            &canary,
            &test_named("smoke"),
            "rev-b",
            ConformanceRun::Step(20),
        );
        assert_eq!(
            job.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(45));
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let env: BTreeMap<String, String> = pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            env["SERIN_CANARY_ADDRESS"],
            "http://podinfo-canary.test:9898"
        );
        assert_eq!(
            env["SERIN_PRIMARY_ADDRESS"],
            "http://podinfo-primary.test:9898"
        );
        assert_eq!(
            env["SERIN_REVISION"], "rev-b",
            "not the template's own value"
        );
        assert_eq!(env["SERIN_NAMESPACE"], "test");
        assert_eq!(env["SERIN_CONFORMANCE_RUN"], "step-20");
        assert_eq!(
            job.metadata.labels.unwrap()[REVISION_LABEL],
            "rev-b".to_string()
        );
    }

    fn job_with(condition: &str, reason: Option<&str>) -> Job {
        Job {
            spec: Some(JobSpec {
                active_deadline_seconds: Some(45),
                ..Default::default()
            }),
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: condition.into(),
                    status: "True".into(),
                    reason: reason.map(str::to_string),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn failed_pod(message: &str) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "smoke".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 1,
                            message: Some(message.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_job_quotes_its_failing_containers_termination_message() {
        assert_eq!(state(&Job::default(), &[]), TestState::Running);
        assert_eq!(state(&job_with("Complete", None), &[]), TestState::Passed);
        assert_eq!(
            state(
                &job_with("Failed", Some("BackoffLimitExceeded")),
                &[failed_pod("GET /healthz: 503\n")]
            ),
            TestState::Failed("container smoke exited with code 1: GET /healthz: 503".into())
        );
        assert_eq!(
            state(&job_with("Failed", Some("DeadlineExceeded")), &[]),
            TestState::Failed("did not finish within its timeout of 45s".into())
        );
    }

    #[test]
    fn a_revision_passes_when_every_test_passed_and_fails_with_the_first_failure() {
        use crate::rollout::plan::Conformance;
        assert_eq!(outcome(&[]), Conformance::Passed);
        let running = vec![
            ("a".to_string(), TestState::Passed),
            ("b".to_string(), TestState::Running),
        ];
        assert_eq!(outcome(&running), Conformance::Running);
        let failed = vec![
            ("a".to_string(), TestState::Running),
            ("b".to_string(), TestState::Failed("exit 1".into())),
        ];
        let Conformance::Failed(f) = outcome(&failed) else {
            panic!()
        };
        assert_eq!(f.message, "conformance test b failed: exit 1");
    }
}
