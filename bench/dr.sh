#!/usr/bin/env bash
# The forwarding tier (`tether lb` mode = "dr") against tether's proxy mode, HAProxy and a
# direct path, in network namespaces, in one run (bench/dr.py says what is measured).
#
#   bench/dr.sh                       # 3 repetitions of 6 s per path and test
#   bench/dr.sh --reps 1 --seconds 2  # a quick look
#   TETHER_BIN=/path/to/tether bench/dr.sh
#
# Root (namespaces). Installs wrk, iperf3, nginx-light and haproxy from Debian when missing.
# Writes bench/results/<date>-dr.md and .json.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
need=()
for c in wrk iperf3 nginx haproxy curl nft; do
    command -v "$c" >/dev/null || need+=("$c")
done
if (( ${#need[@]} )); then
    pkgs=("${need[@]/nginx/nginx-light}")
    pkgs=("${pkgs[@]/nft/nftables}")
    echo "installing from Debian: ${pkgs[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi
if [[ -z "${TETHER_BIN:-}" ]]; then
    cargo build --release --manifest-path "$root/Cargo.toml" -p tether
    TETHER_BIN="$root/target/release/tether"
fi
exec python3 "$here/dr.py" --tether-bin "$TETHER_BIN" --out "$here/results/$(date -u +%Y-%m-%d-%H%M)-dr.md" "$@"
