#!/usr/bin/env bash
# Installs the Debian packages the tests need (scripts/apt-packages.txt) when they are
# missing. Needs root; without root it says what is missing and leaves it to the user.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/apt-packages.txt" | grep -v '^$')
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "install-test-deps: not root; missing packages: ${missing[*]} (tests that need them will fail)" >&2
  exit 0
fi
echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's prometheus package is installed for promtool only. It also enables and starts a
# Prometheus server on :9090, which would take the loopback demo's admin port (and come back
# on every boot): switch off what this script just installed, never a Prometheus the
# machine had before.
if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
