#!/usr/bin/env bash
# Tether's benchmark: `tether lb` against HAProxy (mode tcp, with and without splice) and
# nginx's stream module, plus direct, on this machine, in one run. Writes
# bench/results/<date>.md with each figure and Tether's ratio to each peer.
#
#   bench/run.sh            # full run, about 10 minutes (5 repetitions of 2 s per test)
#   bench/run.sh --quick    # under 2 minutes
#   bench/run.sh --help     # every option (repetitions, seconds, targets, tests)
#   TETHER_BIN=/path/to/tether bench/run.sh   # measure that binary instead of building
#   bench/run.sh --unpinned [--quick]          # the shared-host mode: bench/unpinned.py
#
# Needs root for apt-get (skipped when the peers are already installed: --no-install skips
# it always) and at least 2 CPUs: each proxy is pinned to CPU 0, the load and backends to
# CPU 1. --unpinned pins nothing: tether and HAProxy at their defaults against wrk/nginx and
# pgbench/PostgreSQL, all sharing the CPUs. Only loopback is used; only processes this run
# started are stopped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

install=1
unpinned=0
args=()
for a in "$@"; do
    case "$a" in
        --no-install) install=0 ;;
        --unpinned) unpinned=1 ;;
        *) args+=("$a") ;;
    esac
done

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v python3 >/dev/null || need+=(python3)
if (( unpinned )); then
    command -v wrk >/dev/null || need+=(wrk)
    # Debian 12 ships postgres, initdb and pgbench in postgresql-15 (pg_isready in
    # postgresql-client-15, which it depends on); the postgresql package pulls both.
    compgen -G "/usr/lib/postgresql/*/bin/pgbench" >/dev/null || need+=(postgresql)
else
    [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
    command -v iperf3 >/dev/null || need+=(iperf3)
    command -v taskset >/dev/null || need+=(util-linux)
fi
if (( install )) && (( ${#need[@]} )); then
    echo "installing from Debian: ${need[*]}" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

if [[ -n "${TETHER_BIN:-}" ]]; then
    # A tether binary built elsewhere (another checkout, another commit).
    args+=(--tether-bin "$TETHER_BIN")
else
    echo "building tether (release)" >&2
    cargo build --release --manifest-path "$root/Cargo.toml" -p tether
fi
if (( unpinned )); then
    # wrk and pgbench are the clients: no load client to build. The open-file limit is left
    # as it is: HAProxy's default maxconn follows it, and this mode runs both at defaults.
    exec python3 "$here/unpinned.py" "${args[@]}"
fi
echo "building the load client and the floor relay (release)" >&2
cargo build --release --manifest-path "$here/loadgen/Cargo.toml"

# The idle-connection test holds thousands of sockets: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)"
exec python3 "$here/bench.py" "${args[@]}"
