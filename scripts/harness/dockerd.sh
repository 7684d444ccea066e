#!/usr/bin/env bash
# A Docker engine of the harness's own: Debian's dockerd with its own
# data-root (cached under ~/.cache/millrace/docker), exec-root, socket and pid
# file, so that it never touches a system Docker and leaves the host as it
# found it.
#
#   scripts/harness/dockerd.sh up     start it (does nothing if it runs)
#   scripts/harness/dockerd.sh down   kind clusters deleted, containers and
#                                     networks removed, engine stopped, and
#                                     the host restored (below)
#   scripts/harness/dockerd.sh env    prints `export DOCKER_HOST=...` to eval
#   scripts/harness/dockerd.sh status exit 0 if the engine answers
#
# Why each piece (facts in ../shared/kind.md):
# - runc-capfilter is the default runtime: this sandbox's bounding set lacks
#   CAP_SYS_RESOURCE, and docker 20.10 asks privileged containers (the kind
#   node) for every capability the kernel knows.
# - overlay2 on the host's ext4, the cgroupfs driver (no systemd here).
# - A privileged kind node and dockerd change global host state: sysctls
#   (ip_forward and the forwarding keys, fs.file-max, kernel.panic,
#   kernel.panic_on_oops, vm.overcommit_memory), the docker0 and br-* links,
#   the DOCKER* iptables chains and FORWARD policy, empty iptables-nft tables,
#   /lib/modules. `up` saves the host's state the first time; `down` puts
#   every piece back and reports anything it could not.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
DATA_ROOT="$CACHE/docker"                 # images and build caches: kept
RUN_DIR="${MILLRACE_DOCKER_RUN:-/run/millrace-docker}"  # runtime state: removed by down
SOCK="$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
BASELINE="$RUN_DIR/host-baseline"
CAPFILTER="$CACHE/runc-capfilter/bin/runc-capfilter"

log() { printf '[dockerd] %s\n' "$*" >&2; }
die() { printf 'dockerd.sh: error: %s\n' "$*" >&2; exit 1; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answers() { DOCKER_HOST="unix://$SOCK" timeout 10 docker version >/dev/null 2>&1; }

# Sysctls that change on their own (counters, random, pids): never restored.
VOLATILE='^(kernel\.random\.|kernel\.ns_last_pid|kernel\.pty\.nr|fs\.(dentry-state|inode-nr|inode-state|file-nr|aio-nr|quota\.)|net\.netfilter\.nf_conntrack_count|fs\.binfmt_misc|kernel\.tainted|dev\.|vm\.stat_refresh)'

save_baseline() {
  [ -d "$BASELINE" ] && return 0
  mkdir -p "$BASELINE.tmp"
  sysctl -a 2>/dev/null | sort >"$BASELINE.tmp/sysctl"
  nft list ruleset >"$BASELINE.tmp/nft" 2>/dev/null || true
  iptables -S FORWARD 2>/dev/null | head -n1 >"$BASELINE.tmp/forward-policy" || true
  [ -e /lib/modules ] && touch "$BASELINE.tmp/had-lib-modules"
  mv "$BASELINE.tmp" "$BASELINE"
}

build_capfilter() {
  local src="$HERE/runc-capfilter" stamp
  stamp=$(cat "$src/main.go" "$src/go.mod" | sha256sum | cut -c1-16)
  if [ -x "$CAPFILTER" ] && [ "$(cat "$CAPFILTER.src" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  command -v go >/dev/null || die "go not found (scripts/deps.sh installs what the harness needs)"
  log "building runc-capfilter"
  mkdir -p "$(dirname "$CAPFILTER")"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-trimpath GOCACHE="$CACHE/go/build" GOMODCACHE="$CACHE/go/mod" \
    go build -o "$CAPFILTER" .)
  echo "$stamp" >"$CAPFILTER.src"
}

up() {
  command -v dockerd >/dev/null || die "dockerd not found: apt-get install docker.io (scripts/deps.sh does)"
  if running && answers; then
    log "already running (DOCKER_HOST=unix://$SOCK)"
    return 0
  fi
  mkdir -p "$RUN_DIR" "$DATA_ROOT"
  save_baseline
  build_capfilter
  cat >"$RUN_DIR/daemon.json" <<EOF
{
  "data-root": "$DATA_ROOT",
  "exec-root": "$RUN_DIR/exec",
  "pidfile": "$PIDFILE",
  "hosts": ["unix://$SOCK"],
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "runtimes": { "capfilter": { "path": "$CAPFILTER" } },
  "default-runtime": "capfilter",
  "features": { "buildkit": true },
  "log-driver": "json-file",
  "log-opts": { "max-size": "20m", "max-file": "2" }
}
EOF
  log "starting dockerd (data-root $DATA_ROOT, socket $SOCK)"
  # setsid: the engine outlives this script but not the session's process group kill.
  setsid dockerd --config-file "$RUN_DIR/daemon.json" >"$RUN_DIR/dockerd.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 60); do
    answers && { log "up after ${i}x0.5 s"; return 0; }
    if [ $i -gt 4 ] && ! running; then
      tail -n 20 "$RUN_DIR/dockerd.log" >&2
      die "dockerd exited (log above, whole log $RUN_DIR/dockerd.log)"
    fi
    sleep 0.5
  done
  tail -n 20 "$RUN_DIR/dockerd.log" >&2
  die "dockerd did not answer within 30 s (log $RUN_DIR/dockerd.log)"
}

# Removes the rules dockerd added (they name a DOCKER* chain, docker0 or a
# br-* bridge) and its chains, in one iptables family.
clean_iptables() { # iptables|ip6tables
  local ipt=$1 table rule chain
  command -v "$ipt" >/dev/null || return 0
  for table in filter nat; do
    "$ipt" -t "$table" -S >/dev/null 2>&1 || continue
    while IFS= read -r rule; do
      # shellcheck disable=SC2086 # the rule is iptables -S output: words by design
      eval "$ipt -t $table ${rule/#-A /-D }" || true
    done < <("$ipt" -t "$table" -S | grep -E '^-A ' | grep -E 'DOCKER|docker0|br-[0-9a-f]{12}' || true)
    for chain in $("$ipt" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^DOCKER/ { print $2 }'); do
      "$ipt" -t "$table" -F "$chain" || true
    done
    for chain in $("$ipt" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^DOCKER/ { print $2 }'); do
      "$ipt" -t "$table" -X "$chain" || true
    done
  done
  if [ "$ipt" = iptables ] && [ -f "$BASELINE/forward-policy" ]; then
    local policy
    policy=$(awk '{ print $3 }' "$BASELINE/forward-policy")
    [ -n "$policy" ] && iptables -P FORWARD "$policy"
  else
    "$ipt" -P FORWARD ACCEPT 2>/dev/null || true
  fi
}

# With no ruleset before, the tables iptables-nft created are dropped once
# they hold no rule and no chain of their own.
drop_empty_nft_tables() {
  [ -s "$BASELINE/nft" ] && return 0
  local family table
  while read -r _ family table; do
    if ! nft list table "$family" "$table" | grep -qvE '^\s*(table|chain|type|policy|\}|$)'; then
      # Only base chains with ACCEPT policy and no rules: nothing of the host's.
      if ! nft list table "$family" "$table" | grep -q 'policy drop'; then
        nft delete table "$family" "$table" || true
      fi
    fi
  done < <(nft list tables 2>/dev/null)
}

restore_sysctls() {
  [ -f "$BASELINE/sysctl" ] || return 0
  local now changed key value line
  now=$(mktemp)
  changed=$(mktemp)
  sysctl -a 2>/dev/null | sort >"$now"
  # Values of before that differ now, for keys that still exist (docker0's
  # own keys went with it); ip_forward first: writing it rewrites every
  # conf.*.forwarding key and accept_redirects, which come after.
  comm -23 "$BASELINE/sysctl" "$now" | grep -vE "$VOLATILE" >"$changed" || true
  for pass in first rest; do
    while IFS= read -r line; do
      key=${line%% = *}
      value=${line#* = }
      if [ "$pass" = first ]; then [ "$key" = net.ipv4.ip_forward ] || continue
      else [ "$key" != net.ipv4.ip_forward ] || continue; fi
      grep -q "^$key = " "$now" || continue
      sysctl -q -w "$key=$value" 2>/dev/null && log "restored sysctl $key = $value"
    done <"$changed"
  done
  sysctl -a 2>/dev/null | sort >"$now"
  local left
  left=$(comm -23 "$BASELINE/sysctl" "$now" | grep -vE "$VOLATILE" | while IFS= read -r line; do
    key=${line%% = *}; grep -q "^$key = " "$now" && echo "$line"; done || true)
  rm -f "$now" "$changed"
  [ -z "$left" ] || { log "sysctls still differing from before (values before):"; printf '  %s\n' "$left" >&2; }
}

# Empty cgroup directories the engine and the kind node left (cgroup v1).
remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

down() {
  if running && answers; then
    export DOCKER_HOST="unix://$SOCK"
    if command -v kind >/dev/null; then
      local c
      for c in $(kind get clusters 2>/dev/null); do
        log "deleting kind cluster $c"
        kind delete cluster --name "$c" >/dev/null 2>&1 || true
      done
    fi
    local ids
    ids=$(docker ps -aq)
    [ -z "$ids" ] || { log "removing containers"; docker rm -f -v $ids >/dev/null || true; }
    docker network prune -f >/dev/null || true
  fi
  if running; then
    local pid
    pid=$(cat "$PIDFILE")
    log "stopping dockerd (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "dockerd ignored SIGTERM for 30 s: SIGKILL"; kill -9 "$pid"; }
  fi
  # Its containerd and shims.
  pkill -f "containerd --config $RUN_DIR/exec/" 2>/dev/null || true
  pkill -f "containerd-shim.*$RUN_DIR" 2>/dev/null || true
  # Mounts under the data-root or the runtime directory, deepest first.
  local m
  for m in $(awk -v a="$DATA_ROOT" -v b="$RUN_DIR" 'index($2, a) == 1 || index($2, b) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  local link
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | sed 's/@.*//' | grep -E '^(docker0|br-[0-9a-f]{12})$' || true); do
    ip link delete "$link" 2>/dev/null || true
  done
  if [ -d "$BASELINE" ]; then
    clean_iptables iptables
    clean_iptables ip6tables
    drop_empty_nft_tables
    restore_sysctls
    [ -f "$BASELINE/had-lib-modules" ] || rmdir /lib/modules 2>/dev/null || true
  fi
  remove_cgroups
  rm -rf "$RUN_DIR"
  log "down: engine stopped, host restored"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) echo "export DOCKER_HOST=unix://$SOCK" ;;
  status) running && answers ;;
  *) echo "usage: $0 up|down|env|status" >&2; exit 2 ;;
esac
