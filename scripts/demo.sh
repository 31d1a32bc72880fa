#!/usr/bin/env bash
# The demo: a local control plane, serin and the traffic simulator; podinfo released
# twice, a healthy version that is promoted and a bad one that is rolled back. Prints
# the progress as it happens and tears everything down.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

step "installing dependencies (Debian packages, control-plane binaries)"
scripts/install-deps.sh

step "building serin"
cargo build --bins --example demo

step "starting the local control plane and Prometheus"
env_file=$(tests/e2e/cluster.sh up)
cluster_dir=$(dirname "$env_file")
trap 'step "tearing down"; tests/e2e/cluster.sh down "$cluster_dir"' EXIT
# shellcheck disable=SC1090
. "$env_file"

kubectl create namespace demo >/dev/null
step "starting serin (log: $cluster_dir/logs/serin.log) and the traffic simulator"
# Started in the cluster's pid directory, so that `cluster.sh down` stops them too.
setsid target/debug/serin-trafficsim --namespace demo >"$cluster_dir/logs/trafficsim.log" 2>&1 </dev/null &
echo $! >"$cluster_dir/pids/trafficsim"
setsid target/debug/serin run --namespace demo --metrics-server "$SERIN_PROMETHEUS_URL" \
  --listen 127.0.0.1:0 >"$cluster_dir/logs/serin.log" 2>&1 </dev/null &
echo $! >"$cluster_dir/pids/serin"

target/debug/examples/demo
