#!/usr/bin/env bash
# Runs every panel query of a Grafana dashboard (dashboards/tether.json by default) against
# a Prometheus, through its HTTP API, and fails naming each panel whose query returns no
# series: a metric renamed or a label that does not exist shows up here, not as an empty
# panel in front of an operator. Grafana's interval variables become a fixed window.
# compose/test.sh runs it against the compose demo's Prometheus; it works on any other.
#
#   dashboards/check.sh http://127.0.0.1:9090 [DASHBOARD.json]
#   WINDOW=10m dashboards/check.sh http://prometheus:9090      # default window: 5m
#
# Needs curl and jq (Debian packages curl, jq).
set -euo pipefail
url=${1:?usage: dashboards/check.sh PROMETHEUS_URL [DASHBOARD.json]}
dashboard=${2:-$(dirname "$0")/tether.json}
window=${WINDOW:-5m}
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "dashboards/check.sh: $tool is not installed (Debian package $tool)" >&2; exit 1; }
done

# title, refId and expr of every query, in rows and in collapsed rows alike.
queries=$(jq -r '.. | objects | select(has("targets")) | .title as $t
  | .targets[] | [$t, .refId, .expr] | @tsv' "$dashboard")
[[ -n $queries ]] || { echo "dashboards/check.sh: no panel queries in $dashboard" >&2; exit 1; }

n=0
bad=()
while IFS=$'\t' read -r title ref expr; do
  n=$((n + 1))
  q=$expr
  for v in '$__rate_interval' '${__rate_interval}' '$__interval' '${__interval}' '$__range' '${__range}'; do
    q=${q//"$v"/$window}
  done
  if [[ $q == *'$'* ]]; then
    bad+=("$title ($ref): a variable this check does not know: $q")
    continue
  fi
  if ! out=$(curl -sS --max-time 10 -G --data-urlencode "query=$q" "$url/api/v1/query" 2>&1); then
    bad+=("$title ($ref): no answer from $url: $out")
    continue
  fi
  series=$(jq -r 'if .status == "success" then (.data.result | length) else "error: \(.error)" end' <<<"$out" 2>&1) ||
    series="not JSON: $out"
  if [[ $series =~ ^[0-9]+$ ]] && ((series > 0)); then
    printf '  ok   %-24s %s  %3d series\n' "$title" "$ref" "$series"
  else
    printf '  FAIL %-24s %s  %s\n' "$title" "$ref" "${series/#0/no series}"
    bad+=("$title ($ref): ${series/#0/no series}: $q")
  fi
done <<<"$queries"

if ((${#bad[@]} > 0)); then
  echo "dashboards/check.sh: ${#bad[@]} of $n panel queries returned no data:" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "dashboards/check.sh: all $n panel queries of $(basename "$dashboard") returned data"
