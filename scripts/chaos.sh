#!/usr/bin/env bash
# The chaos run: releases carried through repeated SIGKILLs of serin on a local control
# plane this script starts and stops, watched for the invariants of tests/e2e/chaos.rs.
# SERIN_CHAOS_RELEASES (default 60) and SERIN_CHAOS_SEED (default 7) choose the run;
# every SERIN_CHAOS_CONTROL_PLANE_EVERY-th release (default 5; 0 for none) also loses
# the control plane: kube-apiserver SIGKILLed and restarted 0.5-3 s later, or etcd
# paused for 1-6 s. Nothing else may use this control plane meanwhile: the end-to-end
# suite's short chaos run never touches it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

step "installing dependencies (Debian packages, control-plane binaries)"
scripts/install-deps.sh
step "building the tests"
cargo test --no-run --test e2e
step "starting the local control plane and Prometheus"
env_file=$(tests/e2e/cluster.sh up)
cluster_dir=$(dirname "$env_file")
trap 'step "stopping the local control plane"; tests/e2e/cluster.sh down "$cluster_dir"' EXIT
# shellcheck disable=SC1090
. "$env_file"
export SERIN_CHAOS_RELEASES=${SERIN_CHAOS_RELEASES:-60} SERIN_CHAOS_SEED=${SERIN_CHAOS_SEED:-7}
export SERIN_CHAOS_CONTROL_PLANE_EVERY=${SERIN_CHAOS_CONTROL_PLANE_EVERY:-5}
step "chaos: $SERIN_CHAOS_RELEASES releases, seed $SERIN_CHAOS_SEED, the control plane lost every $SERIN_CHAOS_CONTROL_PLANE_EVERY releases"
cargo test --test e2e -- chaos:: --nocapture
