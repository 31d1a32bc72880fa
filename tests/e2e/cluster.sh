#!/usr/bin/env bash
# A real local Kubernetes control plane and Prometheus on 127.0.0.1, for serin's
# end-to-end tests and demo: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok (simulated nodes, Running/Ready pods) and Prometheus.
#
#   cluster.sh up   [DIR]   start everything; DIR defaults to a new temp dir. Prints
#                           the path of the env file to source.
#   cluster.sh down DIR...  stop everything started in each DIR and remove it.
#   cluster.sh env  DIR     print the env file (KUBECONFIG, SERIN_PROMETHEUS_URL, ...).
#   cluster.sh restart DIR NAME [PAUSE]
#                           SIGKILL one component (kube-apiserver, etcd, prometheus, ...),
#                           wait PAUSE seconds (default 0), and start it again as it was
#                           started; for the chaos run.
#   cluster.sh pause DIR NAME SECONDS
#                           SIGSTOP one component for SECONDS, then SIGCONT (a stalled
#                           etcd disk, a paused VM); for the chaos run.
#
# Every run picks its own free ports and data directory, so two runs never collide.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A port nobody listens on now. Ports are drawn at random from a wide range so that
# concurrent runs do not pick the same one.
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      if ! grep -qx "$p" "$dir/ports" 2>/dev/null; then
        echo "$p" >>"$dir/ports"
        echo "$p"
        return
      fi
    fi
  done
  die "no free port found"
}

# start NAME CMD...: runs CMD in its own session, logs to DIR/logs/NAME.log, and
# records its pid so that `down` can stop the whole process group, and its command line
# so that `restart` can start it again.
start() {
  local name=$1
  shift
  mkdir -p "$dir/cmds"
  printf '%q ' "$@" >"$dir/cmds/$name"
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name"
}

wait_for() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$what did not become healthy within ${timeout}s; last log lines:"
      tail -n 20 "$dir/logs/$what.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
}

install_prometheus() {
  if command -v prometheus >/dev/null; then return; fi
  log "installing Prometheus from Debian's package"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  # The package's service is not wanted: the cluster runs Prometheus as a plain process.
  # Without systemd the package's service does not start (policy-rc.d declines it).
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >&2
}

gen_certs() {
  local pki=$dir/pki
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj "/CN=serin-e2e-ca" 2>/dev/null
    cat >server.cnf <<'EOF'
[req]
distinguished_name = dn
[dn]
[ext]
subjectAltName = IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage = serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 30 -extfile server.cnf -extensions ext 2>/dev/null
    printf '[ext]\nextendedKeyUsage = clientAuth\n' >client.cnf
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=serin-e2e-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out admin.crt -days 30 -extfile client.cnf -extensions ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() {
  local pki=$dir/pki
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: serin-e2e
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: serin-e2e
  context: {cluster: serin-e2e, user: admin}
current-context: serin-e2e
EOF
}

apiserver_ready() {
  curl -fsS --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:$apiserver_port/readyz" | grep -q ok
}

kwok_nodes() {
  for i in 0 1 2; do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  allocatable: {cpu: "640", memory: 2560Gi, pods: "5000"}
  capacity: {cpu: "640", memory: 2560Gi, pods: "5000"}
EOF
  done
}

nodes_ready() {
  [ "$("$bins/kubectl" --kubeconfig "$dir/kubeconfig" get nodes -o \
    jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c True)" -eq 3 ]
}

cmd_up() {
  local t_start
  t_start=$(date +%s)
  dir=${1:-}
  if [ -z "$dir" ]; then
    mkdir -p "$repo/.e2e"
    dir=$(mktemp -d "$repo/.e2e/cluster.XXXXXX")
  fi
  mkdir -p "$dir/logs" "$dir/pids" "$dir/etcd" "$dir/prometheus/data" "$dir/prometheus/targets"
  dir=$(cd "$dir" && pwd)
  # If anything below fails, leave nothing running.
  trap 'log "start-up failed; stopping what was started"; cmd_down "$dir" keep-logs; exit 1' ERR

  command -v openssl >/dev/null || die "openssl is needed to generate the cluster's certificates"
  install_prometheus
  bins=$("$here/build-bins.sh" | tail -n 1)
  echo "$bins" >"$dir/bins"

  log "generating certificates in $dir/pki"
  gen_certs

  local etcd_port etcd_peer_port cm_port sched_port kwok_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port)
  apiserver_port=$(free_port)
  cm_port=$(free_port)
  sched_port=$(free_port)
  kwok_port=$(free_port)
  prometheus_port=$(free_port)

  log "starting etcd on 127.0.0.1:$etcd_port"
  start etcd "$bins/etcd" --name serin-e2e --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "serin-e2e=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --quota-backend-bytes 2147483648 --log-level warn
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

  log "starting kube-apiserver on 127.0.0.1:$apiserver_port"
  local pki=$dir/pki
  # SERIN_E2E_AUDIT_LOG=1: the API server logs every request (verb, resource, user
  # agent) to DIR/audit.log, for the tests and benchmarks that count serin's requests.
  local audit=()
  if [ -n "${SERIN_E2E_AUDIT_LOG:-}" ] && [ "${SERIN_E2E_AUDIT_LOG}" != 0 ]; then
    cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
EOF
    audit=(--audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log"
      --audit-log-format json --audit-log-maxsize 1024 --audit-log-mode blocking)
  fi
  start kube-apiserver "$bins/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$apiserver_port" \
    --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.0.0.0/16 \
    --authorization-mode Node,RBAC \
    --disable-admission-plugins ServiceAccount \
    --allow-privileged \
    --enable-priority-and-fairness=false \
    --event-ttl 1h "${audit[@]}"
  wait_for kube-apiserver 90 apiserver_ready
  write_kubeconfig
  local kubeconfig=$dir/kubeconfig

  log "starting kube-controller-manager, kube-scheduler and kwok"
  # SERIN_E2E_KCM_QPS: the controller manager's client rate (its default, 20 requests/s,
  # unless set); at thousands of Deployments that rate, not CPU, paces their rollouts.
  start kube-controller-manager "$bins/kube-controller-manager" \
    --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$cm_port" --leader-elect=false --authentication-skip-lookup \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --controllers '*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
    --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 \
    --kube-api-qps "${SERIN_E2E_KCM_QPS:-20}" --kube-api-burst "$(( ${SERIN_E2E_KCM_QPS:-20} * 3 / 2 ))"
  start kube-scheduler "$bins/kube-scheduler" \
    --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --authentication-skip-lookup
  start kwok "$bins/kwok" \
    --kubeconfig "$kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --manage-nodes-with-label-selector "" \
    --disregard-status-with-annotation-selector kwok.x-k8s.io/status=custom \
    --disregard-status-with-label-selector "" \
    --cidr 10.1.0.1/16 --node-ip 10.0.0.1 \
    --config "$here/kwok-stages.yaml" \
    --server-address "127.0.0.1:$kwok_port"
  wait_for kube-controller-manager 60 curl -fsSk "https://127.0.0.1:$cm_port/healthz"
  wait_for kube-scheduler 60 curl -fsSk "https://127.0.0.1:$sched_port/healthz"
  wait_for kwok 60 curl -fsS "http://127.0.0.1:$kwok_port/healthz"

  log "creating kwok nodes"
  kwok_nodes | "$bins/kubectl" --kubeconfig "$kubeconfig" apply -f - >/dev/null
  wait_for kwok 60 nodes_ready
  # The API server taints new nodes not-ready; the node lifecycle controller would lift
  # the taint, but it also marks pods NotReady for good whenever kwok's heartbeat comes
  # late (there is no kubelet to mark them Ready again), so it is off and the taint is
  # lifted here.
  "$bins/kubectl" --kubeconfig "$kubeconfig" taint nodes --all node.kubernetes.io/not-ready- >/dev/null

  log "installing serin's CRDs and the upstream Istio and Gateway API CRDs"
  "$bins/kubectl" --kubeconfig "$kubeconfig" apply --server-side -f "$repo/crds/upstream/" >/dev/null
  if compgen -G "$repo/crds/*.yaml" >/dev/null; then
    "$bins/kubectl" --kubeconfig "$kubeconfig" apply --server-side -k "$repo/crds/" >/dev/null
  fi
  # kubectl wait fails at once (instead of waiting) on a CRD whose status has no
  # conditions yet, as a just-created one may under load: ask again.
  local attempt
  for attempt in $(seq 1 30); do
    "$bins/kubectl" --kubeconfig "$kubeconfig" wait --for condition=Established crd --all --timeout 60s >/dev/null 2>&1 && break
    [ "$attempt" -lt 30 ] || die "the CRDs were not established"
    sleep 1
  done

  log "starting Prometheus on 127.0.0.1:$prometheus_port"
  # Scrape targets are files in prometheus/targets/: the traffic simulator and serin
  # register themselves there with their own ports (file_sd picks them up at once).
  # SERIN_E2E_SCRAPE_INTERVAL: how often (1s unless set, for quick tests; a benchmark
  # at thousands of workloads may set what production Prometheus servers use, 5s-15s).
  cat >"$dir/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: ${SERIN_E2E_SCRAPE_INTERVAL:-1s}
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$prometheus_port"]
  - job_name: trafficsim
    file_sd_configs:
      - files: ["$dir/prometheus/targets/trafficsim*.json"]
        refresh_interval: 1s
  - job_name: serin
    file_sd_configs:
      - files: ["$dir/prometheus/targets/serin*.json"]
        refresh_interval: 1s
EOF
  start prometheus prometheus --config.file "$dir/prometheus/prometheus.yml" \
    --storage.tsdb.path "$dir/prometheus/data" --storage.tsdb.retention.time 2h \
    --web.listen-address "127.0.0.1:$prometheus_port" --web.enable-lifecycle
  wait_for prometheus 60 curl -fsS "http://127.0.0.1:$prometheus_port/-/ready"

  cat >"$dir/env" <<EOF
export KUBECONFIG=$dir/kubeconfig
export SERIN_E2E_DIR=$dir
export SERIN_E2E_BINS=$bins
export SERIN_PROMETHEUS_URL=http://127.0.0.1:$prometheus_port
export SERIN_PROMETHEUS_TARGETS=$dir/prometheus/targets
export PATH=$bins:\$PATH
EOF
  if [ ${#audit[@]} -gt 0 ]; then
    echo "export SERIN_E2E_AUDIT_LOG=$dir/audit.log" >>"$dir/env"
  fi
  trap - ERR
  log "control plane and Prometheus ready in $(($(date +%s) - t_start))s (dir $dir)"
  echo "$dir/env"
}

# Whether pid runs (an exited process nobody has reaped yet is a zombie: not running).
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

# Stops every process group started in DIR (TERM, then KILL), and removes DIR.
cmd_down() {
  local d=${1:?usage: cluster.sh down DIR} keep=${2:-}
  [ -d "$d/pids" ] || { log "nothing to stop in $d"; return 0; }
  # Clients first, etcd last. The data is thrown away, so a short grace is enough:
  # kube-apiserver's graceful shutdown would otherwise take half a minute.
  local pids=() name pid
  for name in serin trafficsim prometheus kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$d/pids/$name" ] || continue
    pid=$(cat "$d/pids/$name")
    kill -TERM -- "-$pid" 2>/dev/null && pids+=("$pid")
  done
  local round
  for round in $(seq 1 50); do
    local alive=0
    for pid in "${pids[@]}"; do running "$pid" && alive=1; done
    [ "$alive" -eq 0 ] && break
    [ "$round" -eq 15 ] && for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    sleep 0.2
  done
  if [ -z "$keep" ]; then
    rm -rf "$d"
    rmdir "$repo/.e2e" 2>/dev/null || true
  fi
  log "stopped ${#pids[@]} processes from $d"
}

# Kills one component's process group, waits, and starts it again with its command line.
cmd_restart() {
  dir=${1:?usage: cluster.sh restart DIR NAME [PAUSE]}
  local name=${2:?usage: cluster.sh restart DIR NAME [PAUSE]} pause=${3:-0} pid
  [ -f "$dir/cmds/$name" ] || die "no $name started in $dir"
  pid=$(cat "$dir/pids/$name")
  kill -KILL -- "-$pid" 2>/dev/null || true
  while running "$pid"; do sleep 0.05; done
  sleep "$pause"
  log "restarting $name"
  eval "start $name $(cat "$dir/cmds/$name")"
}

# Stops one component's process group for a while, then lets it go on.
cmd_pause() {
  dir=${1:?usage: cluster.sh pause DIR NAME SECONDS}
  local name=${2:?usage: cluster.sh pause DIR NAME SECONDS} seconds=${3:?usage: cluster.sh pause DIR NAME SECONDS} pid
  [ -f "$dir/pids/$name" ] || die "no $name started in $dir"
  pid=$(cat "$dir/pids/$name")
  log "pausing $name for ${seconds}s"
  kill -STOP -- "-$pid"
  sleep "$seconds"
  kill -CONT -- "-$pid"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  pause) shift; cmd_pause "$@" ;;
  down)
    shift
    [ $# -gt 0 ] || { echo "usage: cluster.sh down DIR..." >&2; exit 2; }
    for d in "$@"; do cmd_down "$d"; done
    ;;
  env) shift; cat "${1:?usage: cluster.sh env DIR}/env" ;;
  *) echo "usage: cluster.sh up [DIR] | down DIR | env DIR | restart DIR NAME [PAUSE] | pause DIR NAME SECONDS" >&2; exit 2 ;;
esac
