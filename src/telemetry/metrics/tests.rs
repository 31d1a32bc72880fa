use super::*;
use prometheus_client::encoding::text::encode;

fn setup() -> (Registry, Metrics) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    (registry, metrics)
}

fn render(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line {line:?} in:\n{text}"
    );
}

fn assert_no_series(text: &str, series: &str) {
    let found: Vec<_> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(series))
        .collect();
    assert!(found.is_empty(), "unexpected {series}: {found:?}");
}

#[test]
fn canary_series_render_with_flagger_names_and_labels() {
    let (registry, metrics) = setup();
    metrics.set_info("0.1.0", "istio");
    metrics.set_phase("podinfo", "test", CanaryPhase::Progressing);
    metrics.set_weight("podinfo", "test", 95, 5);
    metrics.observe_duration("podinfo", "test", 1.5);
    metrics.set_total("test", 2);
    metrics.set_metric_analysis("podinfo", "test", "request-success-rate", 99.5);
    metrics.inc_outcome(
        "podinfo",
        "test",
        DeploymentStrategy::BlueGreen,
        AnalysisStatus::Completed,
        Outcome::Succeeded,
    );
    metrics.inc_outcome(
        "podinfo",
        "test",
        DeploymentStrategy::Canary,
        AnalysisStatus::Skipped,
        Outcome::Failed,
    );
    let text = render(&registry);

    assert_line(
        &text,
        r#"serin_info{version="0.1.0",mesh_provider="istio"} 1"#,
    );
    assert_line(&text, "# TYPE serin_canary_status gauge");
    assert_line(
        &text,
        r#"serin_canary_status{name="podinfo",namespace="test"} 0.0"#,
    );
    assert_line(
        &text,
        r#"serin_canary_weight{workload="podinfo-primary",namespace="test"} 95"#,
    );
    assert_line(
        &text,
        r#"serin_canary_weight{workload="podinfo",namespace="test"} 5"#,
    );
    assert_line(&text, "# TYPE serin_canary_duration_seconds histogram");
    assert_line(
        &text,
        r#"serin_canary_duration_seconds_bucket{le="2.5",name="podinfo",namespace="test"} 1"#,
    );
    assert_line(
        &text,
        r#"serin_canary_duration_seconds_sum{name="podinfo",namespace="test"} 1.5"#,
    );
    assert_line(&text, r#"serin_canary_total{namespace="test"} 2"#);
    assert_line(
        &text,
        r#"serin_canary_metric_analysis{name="podinfo",namespace="test",metric="request-success-rate"} 99.5"#,
    );
    assert_line(&text, "# TYPE serin_canary_successes counter");
    assert_line(
        &text,
        r#"serin_canary_successes_total{name="podinfo",namespace="test",deployment_strategy="blue-green",analysis_status="completed"} 1"#,
    );
    assert_line(
        &text,
        r#"serin_canary_failures_total{name="podinfo",namespace="test",deployment_strategy="canary",analysis_status="skipped"} 1"#,
    );
}

#[test]
fn status_follows_flaggers_encoding_of_phases() {
    let cases = [
        (CanaryPhase::Initializing, 1.0),
        (CanaryPhase::Initialized, 1.0),
        (CanaryPhase::Waiting, 1.0),
        (CanaryPhase::Progressing, 0.0),
        (CanaryPhase::WaitingPromotion, 1.0),
        (CanaryPhase::Promoting, 1.0),
        (CanaryPhase::Finalising, 1.0),
        (CanaryPhase::Succeeded, 1.0),
        (CanaryPhase::Failed, 2.0),
        (CanaryPhase::Terminating, 1.0),
    ];
    for (phase, expected) in cases {
        assert_eq!(status_value(phase), expected, "{phase}");
    }
}

#[test]
fn reconcile_timer_observes_on_drop_and_errors_count_by_label() {
    let (registry, metrics) = setup();
    {
        let _timer = metrics.reconcile_started();
    }
    let _ = metrics.reconcile_started();
    metrics.reconcile_failed("kube");
    metrics.reconcile_failed("kube");
    let text = render(&registry);

    assert_line(&text, "# TYPE serin_reconcile_duration_seconds histogram");
    assert_line(&text, "serin_reconcile_duration_seconds_count 2");
    assert_line(&text, r#"serin_reconcile_errors_total{error="kube"} 2"#);
}

#[test]
fn slot_waits_are_counted_by_lane() {
    let (registry, metrics) = setup();
    metrics.observe_slot_wait("tick", 0.02);
    metrics.observe_slot_wait("other", 3.0);
    metrics.observe_slot_wait("other", 0.0);
    let text = render(&registry);

    assert_line(
        &text,
        r#"serin_reconcile_slot_wait_seconds_count{lane="tick"} 1"#,
    );
    assert_line(
        &text,
        r#"serin_reconcile_slot_wait_seconds_count{lane="other"} 2"#,
    );
    assert_line(
        &text,
        r#"serin_reconcile_slot_wait_seconds_bucket{le="2.5",lane="other"} 1"#,
    );
}

#[test]
fn forget_removes_every_series_of_the_canary_and_keeps_the_others() {
    let (registry, metrics) = setup();
    for name in ["podinfo", "other"] {
        metrics.set_phase(name, "test", CanaryPhase::Succeeded);
        metrics.set_weight(name, "test", 100, 0);
        metrics.observe_duration(name, "test", 0.2);
        metrics.set_metric_analysis(name, "test", "request-duration", 120.0);
        metrics.set_metric_analysis(name, "test", "error-rate", 0.1);
        metrics.inc_outcome(
            name,
            "test",
            DeploymentStrategy::AbTesting,
            AnalysisStatus::Completed,
            Outcome::Succeeded,
        );
        metrics.inc_outcome(
            name,
            "test",
            DeploymentStrategy::Canary,
            AnalysisStatus::Completed,
            Outcome::Failed,
        );
    }
    metrics.set_total("test", 2);

    metrics.forget("podinfo", "test");
    let text = render(&registry);

    let gone: Vec<_> = text
        .lines()
        .filter(|l| l.contains(r#""podinfo""#) || l.contains(r#""podinfo-primary""#))
        .collect();
    assert!(gone.is_empty(), "series left behind: {gone:?}");
    assert_line(
        &text,
        r#"serin_canary_status{name="other",namespace="test"} 1.0"#,
    );
    assert_line(
        &text,
        r#"serin_canary_weight{workload="other-primary",namespace="test"} 100"#,
    );
    assert_line(
        &text,
        r#"serin_canary_metric_analysis{name="other",namespace="test",metric="error-rate"} 0.1"#,
    );
    assert_line(&text, r#"serin_canary_total{namespace="test"} 2"#);
}

#[test]
fn nothing_is_rendered_for_a_canary_before_it_is_recorded() {
    let (registry, _metrics) = setup();
    let text = render(&registry);
    assert_no_series(&text, "serin_canary_status{");
    assert_line(&text, "# EOF");
}

#[test]
fn clones_update_the_same_series() {
    let (registry, metrics) = setup();
    let clone = metrics.clone();
    clone.set_total("test", 3);
    assert_line(
        &render(&registry),
        r#"serin_canary_total{namespace="test"} 3"#,
    );
}
