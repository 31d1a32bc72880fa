#!/usr/bin/env bash
# Builds, at pinned versions, the control-plane binaries the end-to-end tests and the
# demo run: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and
# kwok, from their Go modules, and helm, which renders deploy/chart in the install tests.
# The result is cached; a second call returns at once.
#
# Prints the directory holding the binaries on its last line of stdout.
set -euo pipefail

K8S_VERSION=1.35.4          # matches k8s-openapi's v1_35 feature in Cargo.toml
ETCD_VERSION=3.6.16
KWOK_VERSION=0.7.0
HELM_VERSION=3.22.0

cache_root=${SERIN_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/serin-e2e}
bin_dir="$cache_root/bin-k8s$K8S_VERSION-etcd$ETCD_VERSION-kwok$KWOK_VERSION"
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)

log() { printf '[build-bins %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have_all() {
  for b in "${want[@]}"; do [ -x "$bin_dir/$b" ] || return 1; done
}

if have_all; then
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null || { log "go is not installed; it is needed to build the control plane"; exit 1; }

mkdir -p "$bin_dir"
# One build at a time: a second caller (another checkout, a test run started alongside)
# waits for the first and then finds the binaries it built.
exec 9>"$cache_root/.build.lock"
if ! flock -n 9; then
  log "another build of the control-plane binaries is running; waiting for it"
  flock 9
fi
if have_all; then
  echo "$bin_dir"
  exit 0
fi
work="$cache_root/src"
mkdir -p "$work"

# The checksum database is not reachable from every machine; the versions are pinned
# above, and the module proxy serves them, so checksum lookups are turned off for these
# builds only.
# Modules come from wherever this machine's Go is configured to fetch them (GOPROXY).
export GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

build_started=$(date +%s)

# --- Kubernetes: a wrapper module with replace lines for the staging modules -------
k8s_mod="$work/k8s-$K8S_VERSION"
mkdir -p "$k8s_mod"
if [ ! -f "$k8s_mod/go.mod" ]; then
  log "resolving k8s.io/kubernetes v$K8S_VERSION staging modules"
  staging_version="v0.${K8S_VERSION#1.}"
  # Ask go for the module's go.mod (it lands in the module cache, which the build below
  # needs anyway).
  mod_file=$(cd "$work" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -n "$mod_file" ] || { log "go mod download k8s.io/kubernetes@v$K8S_VERSION failed"; exit 1; }
  upstream_mod=$(cat "$mod_file")
  {
    echo "module serin.dev/e2e-k8s-bins"
    echo
    echo "go 1.25.0"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    echo "replace ("
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' <<<"$upstream_mod" |
      awk -v v="$staging_version" '{ printf "\t%s => %s %s\n", $1, $1, v }'
    echo ")"
  } >"$k8s_mod/go.mod.tmp"
  cat >"$k8s_mod/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  mv "$k8s_mod/go.mod.tmp" "$k8s_mod/go.mod"
fi
(
  cd "$k8s_mod"
  log "downloading Kubernetes v$K8S_VERSION modules (first run only)"
  go mod tidy -e >/dev/null 2>&1 || true
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    if [ ! -x "$bin_dir/$cmd" ]; then
      t0=$(date +%s)
      log "building $cmd v$K8S_VERSION"
      go build -trimpath -ldflags "-s -w \
        -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.} \
        -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION" \
        -o "$bin_dir/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$bin_dir/$cmd.tmp" "$bin_dir/$cmd"
      log "built $cmd in $(($(date +%s) - t0))s"
    fi
  done
)

# --- etcd: its server module exposes etcdmain; a two-line main wraps it -------------
etcd_mod="$work/etcd-$ETCD_VERSION"
mkdir -p "$etcd_mod"
if [ ! -x "$bin_dir/etcd" ]; then
  cat >"$etcd_mod/go.mod" <<EOF
module serin.dev/e2e-etcd

go 1.24

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
EOF
  cat >"$etcd_mod/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (
    cd "$etcd_mod"
    t0=$(date +%s)
    log "building etcd v$ETCD_VERSION"
    go mod tidy >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd.tmp" .
    mv "$bin_dir/etcd.tmp" "$bin_dir/etcd"
    log "built etcd in $(($(date +%s) - t0))s"
  )
fi

# --- kwok -------------------------------------------------------------------------
if [ ! -x "$bin_dir/kwok" ]; then
  t0=$(date +%s)
  log "building kwok v$KWOK_VERSION"
  GOBIN="$bin_dir/.kwok-install" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  mv "$bin_dir/.kwok-install/kwok" "$bin_dir/kwok"
  rmdir "$bin_dir/.kwok-install"
  log "built kwok in $(($(date +%s) - t0))s"
fi

# --- helm -------------------------------------------------------------------------
if [ ! -x "$bin_dir/helm" ]; then
  t0=$(date +%s)
  log "building helm v$HELM_VERSION"
  GOBIN="$bin_dir/.helm-install" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  mv "$bin_dir/.helm-install/helm" "$bin_dir/helm"
  rmdir "$bin_dir/.helm-install"
  log "built helm in $(($(date +%s) - t0))s"
fi

have_all || { log "some binaries are missing in $bin_dir"; exit 1; }
log "control-plane binaries ready in $(($(date +%s) - build_started))s: $bin_dir"
echo "$bin_dir"
