#!/bin/bash
# A balancer box: `tether lb` and `tether vrrp` side by side, as on a real host. SIGTERM
# (docker compose stop) reaches VRRP first, so it sends priority 0 and the backup takes the
# VIP at once, then the balancer drains. If either daemon dies, the box stops as a whole.
set -u
tether lb --config /etc/tether/lb.toml & lb=$!
tether vrrp --config "/etc/tether/vrrp-$(hostname).toml" & vrrp=$!
trap 'kill -TERM "$vrrp" 2>/dev/null; kill -TERM "$lb" 2>/dev/null' TERM INT
wait -n
kill -TERM "$vrrp" 2>/dev/null
kill -TERM "$lb" 2>/dev/null
wait
