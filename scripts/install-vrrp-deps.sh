#!/bin/sh
# Installs the real peers the VRRP namespace tests talk to: keepalived (Debian 12 ships
# 2.2.7), tshark for decoding our adverts, iproute2 for the lab. Idempotent; safe in CI.
set -eu
need=""
command -v keepalived >/dev/null 2>&1 || need="$need keepalived"
command -v tshark >/dev/null 2>&1 || need="$need tshark"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
[ -z "$need" ] && exit 0
# Tests running in parallel may all get here: one apt-get at a time.
exec 9>/tmp/tether-install-vrrp-deps.lock
flock 9
need=""
command -v keepalived >/dev/null 2>&1 || need="$need keepalived"
command -v tshark >/dev/null 2>&1 || need="$need tshark"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
[ -z "$need" ] && exit 0
# Keep packages from starting services on install (there is no init system here anyway).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
fi
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
