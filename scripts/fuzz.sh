#!/usr/bin/env bash
# Fuzzes every parser of hostile input (fuzz/README.md): runs each target for SECONDS and
# fails on a crash (a panic, an overflow, a failed property) or a hang.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     all targets when none is named
#
# Seeds come from fuzz/corpus/TARGET (kept in the repository, read only); what the fuzzer
# finds on top grows in $FUZZ_TARGET_DIR/corpus/TARGET and is kept between runs. Crashes
# are written to fuzz/artifacts/TARGET/ with the command that replays them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
# A single input that runs this long is a hang.
hang_secs=${FUZZ_HANG_SECS:-10}
target_dir=$(realpath -m "${FUZZ_TARGET_DIR:-fuzz/target}")
cargo_fuzz_version=0.13.2

# cargo-fuzz on stable needs `--sanitizer none` (sanitizers are nightly-only); panics and
# overflow checks still abort the run, which is what these memory-safe parsers can do wrong.
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]]; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version" >&2
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --quiet
fi

targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

(cd fuzz && cargo fuzz build --sanitizer none --target-dir "$target_dir")

# Largest input per target: room for the biggest real input of its kind, no more, so the
# fuzzer spends its time on shapes rather than on length.
max_len() {
  case $1 in
    lb_client_hello) echo 8192 ;;  # a post-quantum ClientHello is ~2 KiB
    vrrp_ipv4 | vrrp_ipv6) echo 4200 ;;  # 255 IPv6 addresses and the IP header
    gateway_preamble) echo 512 ;;
    lb_proxy_header) echo 1024 ;;
    *) echo 4096 ;;
  esac
}

logs="$target_dir/fuzz-logs"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
  work="$target_dir/corpus/$t"
  mkdir -p "$work" "fuzz/artifacts/$t"
  echo "== fuzz $t for ${seconds}s"
  rc=0
  # The outer timeout only guards against libFuzzer itself stalling.
  (cd fuzz && timeout $((seconds + 5 * hang_secs + 60)) \
    cargo fuzz run --sanitizer none --target-dir "$target_dir" "$t" "$work" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout="$hang_secs" -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 -print_final_stats=1) >"$logs/$t.log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  summary+=("$(printf '%-18s %12s execs  %s' "$t" "${execs:-?}" "$([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)")")")
  if [[ $rc != 0 ]]; then
    failed+=("$t")
    grep -E -A30 'panicked|ERROR: libFuzzer|ALARM|Test unit written|SUMMARY' "$logs/$t.log" | head -60 >&2 || tail -40 "$logs/$t.log" >&2
  fi
done

echo "== fuzz summary (${seconds}s per target; logs in $logs)"
printf '%s\n' "${summary[@]}"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
((${#failed[@]} == 0)) || {
  echo "fuzz: failing targets: ${failed[*]}; replay with: cd fuzz && cargo fuzz run --sanitizer none TARGET artifacts/TARGET/FILE" >&2
  exit 1
}
