//! The CRD YAML committed in `crds/` must be exactly what the Rust types generate.
//!
//! Regenerate with `SERIN_UPDATE_CRDS=1 cargo test --test crd_sync`.

use std::path::Path;

use kube::CustomResourceExt;
use serin::api::{self, AlertProvider, Canary, MetricTemplate};

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
    check("canary.yaml", api::crd_yaml(&Canary::crd()));
    check("metrictemplate.yaml", api::crd_yaml(&MetricTemplate::crd()));
    check("alertprovider.yaml", api::crd_yaml(&AlertProvider::crd()));
}

#[test]
fn serin_crds_prints_the_committed_files_in_order() {
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
