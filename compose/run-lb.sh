#!/bin/bash
# A balancer box: `tether lb` and `tether vrrp` side by side, as on a real host. SIGTERM
# (docker compose stop) reaches VRRP first, so it sends priority 0 and the backup takes the
# VIP at once, then the balancer drains. If either daemon dies, the box stops as a whole.
#
#   run-lb.sh [LB_CONFIG [VRRP_CONFIG]]   (default: lb.toml, vrrp-<hostname>.toml)
set -u
lb_config=${1:-/etc/tether/lb.toml}
vrrp_config=${2:-/etc/tether/vrrp-$(hostname).toml}
tether lb --config "$lb_config" & lb=$!
tether vrrp --config "$vrrp_config" & vrrp=$!
trap 'kill -TERM "$vrrp" 2>/dev/null; kill -TERM "$lb" 2>/dev/null' TERM INT
wait -n
kill -TERM "$vrrp" 2>/dev/null
kill -TERM "$lb" 2>/dev/null
wait
