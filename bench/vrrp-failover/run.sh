#!/bin/sh
# VRRP failover benchmark: Tether vs keepalived 2.2.7 side by side, in one run, in
# network namespaces (needs root). Prints a table of client-visible outages (medians).
#   BENCH_RUNS=5 bench/vrrp-failover/run.sh
set -eu
cd "$(dirname "$0")/../.."
scripts/install-vrrp-deps.sh
mkdir -p bench/results
cargo test --release -p tether --test vrrp_failover -- --ignored --nocapture --test-threads=1 \
    2>&1 | tee bench/results/vrrp-failover.tmp
