//! The CRD YAML committed in `crds/` must be exactly what the Rust types generate.
//!
//! Regenerate with `SERIN_UPDATE_CRDS=1 cargo test --test crd_sync`.

use std::path::Path;

use serin::api;

const REGENERATE: &str = "SERIN_UPDATE_CRDS=1 cargo test --test crd_sync";

fn check(file: &str, generated: String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crds")
        .join(file);
    if std::env::var_os("SERIN_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("writing the CRD file");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "crds/{file} is out of date with the Rust types (first difference at line \
             {first_difference}).\nRegenerate it with:\n\n    {REGENERATE}\n"
        );
    }
}

#[test]
fn committed_crds_match_the_rust_types() {
    let crds = api::crds();
    let by_kind = |kind: &str| {
        let crd = crds
            .iter()
            .find(|crd| crd.spec.names.kind == kind)
            .expect("kind is served");
        api::crd_yaml(crd)
    };
    check("canary.yaml", by_kind("Canary"));
    check("metrictemplate.yaml", by_kind("MetricTemplate"));
    check("alertprovider.yaml", by_kind("AlertProvider"));
}

#[test]
fn serin_crds_prints_the_committed_files_in_order() {
    if std::env::var_os("SERIN_UPDATE_CRDS").is_some() {
        // The other test is rewriting the files right now.
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let committed: String = ["canary.yaml", "metrictemplate.yaml", "alertprovider.yaml"]
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            format!("---\n{text}")
        })
        .collect();
    assert!(
        api::crds_yaml() == committed,
        "`serin crds` differs from crds/*.yaml; regenerate with:\n\n    {REGENERATE}\n"
    );
}

#[test]
fn the_helm_chart_carries_the_same_crds() {
    if std::env::var_os("SERIN_UPDATE_CRDS").is_some() {
        // `make crds` is rewriting crds/; it copies them into the chart next.
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["canary.yaml", "metrictemplate.yaml", "alertprovider.yaml"] {
        let committed = std::fs::read_to_string(root.join("crds").join(file)).unwrap();
        let chart =
            std::fs::read_to_string(root.join("deploy/chart/crds").join(file)).unwrap_or_default();
        assert!(
            committed == chart,
            "deploy/chart/crds/{file} differs from crds/{file}; run `make crds`"
        );
    }
}
