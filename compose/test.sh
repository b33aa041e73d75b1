#!/usr/bin/env bash
# Brings the compose demo up, walks the tutorial's steps, and tears it down (also when a
# step fails). Needs Docker with Compose (v2 plugin or docker-compose v1) and root for the
# local base image (compose/build-base.sh).
#
#   compose/test.sh                       # builds target/release/tether if missing
#   TETHER_BIN=target/debug/tether compose/test.sh
#
# Steps: every service path echoes; each balancer and gateway is stopped in turn
# (`compose stop`) while clients probe every 20 ms, the paths still echo, and it is started
# again; Prometheus has scraped every daemon.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
project=${COMPOSE_PROJECT:-tether-compose-test}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-19090}
started=$(date +%s)

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "compose/test.sh: neither 'docker compose' nor docker-compose is installed" >&2
  exit 1
fi
dc() { "${compose[@]}" -p "$project" -f "$here/compose.yaml" "$@"; }
say() { printf '\n== [%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
fail() { echo "FAIL: $*" >&2; dc ps >&2 || true; dc logs --tail 30 >&2 || true; exit 1; }

cleanup() {
  local rc=$?
  say "tearing down"
  dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
  rm -rf "$here/bin"
  exit $rc
}
trap cleanup EXIT INT TERM

bin=${TETHER_BIN:-$root/target/release/tether}
if [[ ! -x $bin ]]; then
  say "building the release binary"
  (cd "$root" && cargo build --release -p tether)
fi
mkdir -p "$here/bin"
# Stripped: the image needs the program, not the debug info.
strip -o "$here/bin/tether" "$bin" 2>/dev/null || cp "$bin" "$here/bin/tether"

say "base image"
"$here/build-base.sh"

say "build and up"
dc down -v --remove-orphans -t 1 >/dev/null 2>&1 || true
dc build -q
dc up -d

# Runs a command in a box.
ex() { local box=$1; shift; dc exec -T "$box" "$@"; }

# One echo exchange: prints the banner of the server that answered. A new connection gets
# three tries (a user would press enter again); the probes count every failure anyway.
echo_path() {
  local box=$1 host=$2 port=$3 out try
  for try in 1 2 3; do
    out=$(printf 'tether compose hello\n' | ex "$box" nc -w 2 -q 1 "$host" "$port" 2>&1) || true
    if [[ $out == *"tether compose hello"* ]]; then
      echo "${out%%$'\n'*}"
      return 0
    fi
    sleep 0.5
  done
  echo "no echo from $host:$port via $box after $try tries: ${out:-nothing}" >&2
  return 1
}

# The client paths of the scenario: box host port. Service A (server A, on-prem) through
# the VIP and a cloud gateway; service B (server B, cloud) through each on-prem gateway.
paths=("client-a 203.0.113.100 5551" "client-b 198.51.100.11 6661" "client-b 198.51.100.12 6661")
# The box a path enters through, when it is not the VIP.
entry() { case $2 in 198.51.100.11) echo onprem1 ;; 198.51.100.12) echo onprem2 ;; *) echo vip ;; esac; }

# Waits (bounded) until every path echoes.
wait_paths() {
  local deadline=$(($(date +%s) + $1)) p
  while :; do
    local ok=1
    for p in "${paths[@]}"; do
      # shellcheck disable=SC2086
      echo_path $p >/dev/null 2>&1 || ok=0
    done
    ((ok)) && return 0
    (($(date +%s) < deadline)) || return 1
    sleep 0.5
  done
}

say "waiting for every path to echo"
wait_paths 90 || fail "the paths did not come up"
for p in "${paths[@]}"; do
  # shellcheck disable=SC2086
  who=$(echo_path $p) || fail "path $p"
  echo "path $p: answered by $who"
done

# Who holds the VIP now.
vip_holders() {
  local b h=()
  for b in lb1 lb2; do
    ex "$b" ip -br addr show dev eth0 2>/dev/null | grep -q '203\.0\.113\.100/' && h+=("$b")
  done
  echo "${h[*]:-nobody}"
}
echo "VIP held by: $(vip_holders)"
[[ $(vip_holders) == lb1 ]] || fail "lb1 (priority 150) should hold the VIP"

# Sessions a cloud node holds now.
sessions() {
  ex "$1" curl -s --max-time 2 127.0.0.1:9100/metrics 2>/dev/null |
    awk '/^tether_gateway_sessions[{ ]/ { s += $NF } END { print s + 0 }'
}
# Settled: every cloud node holds its prepared sessions from both on-prem gateways again.
settled() {
  local c
  for c in cloud1 cloud2; do
    (($(sessions "$c") >= 4)) || return 1
  done
}

deadline=$(($(date +%s) + 30))
until settled; do
  (($(date +%s) < deadline)) || fail "sessions never settled: $(sessions cloud1)/$(sessions cloud2)"
  sleep 0.5
done
echo "sessions per cloud node: $(sessions cloud1) / $(sessions cloud2)"

figures=()
for box in lb1 lb2 cloud1 cloud2 onprem1 onprem2; do
  say "stop $box while clients probe every 20 ms"
  other=onprem2; [[ $box == onprem2 ]] && other=onprem1
  other_ip=198.51.100.11; [[ $other == onprem2 ]] && other_ip=198.51.100.12
  fa=$(mktemp) fb=$(mktemp)
  ex client-a tether probe --json --connect 203.0.113.100:5551 --every 20ms --for 9s \
    --timeout 1s >"$fa" 2>/dev/null &
  pa=$!
  ex client-b tether probe --json --connect "$other_ip:6661" --every 20ms --for 9s \
    --timeout 1s >"$fb" 2>/dev/null &
  pb=$!
  sleep 1.5
  dc stop -t 10 "$box" >/dev/null 2>&1
  for p in "${paths[@]}"; do
    # shellcheck disable=SC2086
    [[ $(entry $p) == "$box" ]] && continue   # a path entering through the stopped box
    # shellcheck disable=SC2086
    who=$(echo_path $p) || fail "path $p while $box is stopped"
    echo "  $box stopped: path $p answered by $who"
  done
  echo "  VIP held by $(vip_holders)"
  sleep 1
  dc start "$box" >/dev/null 2>&1
  wait "$pa" "$pb" || true
  for pair in "A:$fa" "B via $other:$fb"; do
    name=${pair%%:*}; f=${pair#*:}
    report=$(cat "$f"); rm -f "$f"
    failures=$(sed -n 's/.*"failures":\([0-9]*\).*/\1/p' <<<"$report")
    gap=$(sed -n 's/.*"longest_gap_s":\([0-9.e-]*\).*/\1/p' <<<"$report")
    [[ -n $failures ]] || fail "no probe report for service $name: $report"
    echo "  service $name probe: $report"
    figures+=("$box stop/start, service $name: $failures failed probes, longest gap ${gap}s")
    # A clean stop: VRRP sends priority 0, balancers and gateways drain. The balancer
    # cases may cost the VIP takeover window (the sessions through it are re-dialed);
    # the gateway cases must cost nothing.
    # (The namespace failure matrix holds gateways to zero, with a confirming re-run;
    # here, on Docker's heavier path, a gateway stop may cost at most 5 probes of ~400:
    # up to 2 have been seen when an on-prem gateway drains.)
    awk -v g="$gap" 'BEGIN { exit !(g < 1.5) }' || fail "$box stop: service $name gap ${gap}s"
    if [[ $box != lb* ]]; then
      ((failures <= 5)) || fail "$box stop: service $name lost $failures probes"
    fi
  done
  wait_paths 30 || fail "paths after $box came back"
  deadline=$(($(date +%s) + 20))
  until [[ $(vip_holders) == lb1 ]] && settled; do
    (($(date +%s) < deadline)) ||
      fail "after $box returned: VIP held by $(vip_holders), sessions $(sessions cloud1)/$(sessions cloud2)"
    sleep 0.5
  done
done

say "Prometheus has scraped every daemon"
want=8
deadline=$(($(date +%s) + 60))
while :; do
  targets=$(ex client-a curl -s --max-time 2 http://203.0.113.90:9090/api/v1/targets || true)
  up=$(grep -o '"health":"up"' <<<"$targets" | wc -l)
  ((up >= want)) && break
  (($(date +%s) < deadline)) || fail "Prometheus: $up of $want targets up: $targets"
  sleep 1
done
echo "Prometheus: $up of $want targets up"
for metric in tether_lb_server_up tether_vrrp_state tether_gateway_sessions; do
  ex client-a curl -s --max-time 2 "http://203.0.113.90:9090/api/v1/query?query=$metric" |
    grep -q '"result":\[{' || fail "Prometheus has no $metric samples"
done

say "figures"
printf '  %s\n' "${figures[@]}"
echo "compose/test.sh: all steps passed in $(($(date +%s) - started)) s"
