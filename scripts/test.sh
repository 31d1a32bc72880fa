#!/usr/bin/env bash
# Runs all of serin's tests on a fresh machine: formatting and lints, unit tests, the
# CRD-sync test, and the end-to-end tests on a local control plane with Prometheus,
# which this script starts and stops.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
started=$(date +%s)

step "installing dependencies (Debian packages, control-plane binaries)"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "building the tests"
cargo test --no-run

step "starting the local control plane and Prometheus"
# The audit log lets tests/e2e/idle.rs count the requests serin sends.
env_file=$(SERIN_E2E_AUDIT_LOG=1 tests/e2e/cluster.sh up)
cluster_dir=$(dirname "$env_file")
trap 'step "stopping the local control plane"; tests/e2e/cluster.sh down "$cluster_dir"' EXIT
# shellcheck disable=SC1090
. "$env_file"

step "running unit, CRD-sync and end-to-end tests"
cargo test -- --nocapture ${SERIN_TEST_ARGS:-}

step "all tests passed in $(($(date +%s) - started))s"
