#!/usr/bin/env bash
# Stream throughput through tether gateway vs a plain TLS connection over the same delayed
# path (a WAN between on-prem and cloud). Reports MiB/s and the ratio gateway/plain; the
# target is >= 0.80 for one stream. Usage: bench/gateway-throughput.sh [RTT] [MBIT] [MIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
rtt="${1:-50ms}"
mbit="${2:-1000}"
mib="${3:-128}"
runs="${4:-3}"
cargo build --release -q -p tether-gateway --example throughput
exec target/release/examples/throughput --rtt "$rtt" --mbit "$mbit" --mib "$mib" --runs "$runs"
