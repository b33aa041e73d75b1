#!/usr/bin/env bash
# Stream throughput through tether gateway vs a plain TLS connection over the same delayed
# path (a WAN between on-prem and cloud). Reports MiB/s and the ratio gateway/plain; the
# target is >= 0.80 for one stream. Usage: bench/gateway-throughput.sh [RTT] [MIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
rtt="${1:-50ms}"
mib="${2:-128}"
runs="${3:-3}"
cargo build --release -q -p tether-gateway --example throughput
exec target/release/examples/throughput --rtt "$rtt" --mib "$mib" --runs "$runs"
