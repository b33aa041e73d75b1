#!/bin/bash
# A cloud node behind the dr balancers (compose.dr.yaml): prepared as an LVS-DR server, then
# the gateway. The VIP goes on lo so the kernel accepts the frames the balancers forward and
# answers from the VIP. The ARP settings (arp_ignore = 1, arp_announce = 2: never answer or
# announce the VIP on the cloud network, which would steal it from the balancers) come from
# the compose file's `sysctls:`, because Docker mounts /proc/sys read-only in a container,
# which is also why this is not `tether dr-server` (it writes them itself). The VIP goes
# with the container's network namespace; nothing to undo.
#
#   run-dr-node.sh VIP GATEWAY_CONFIG
set -eu
vip=$1 config=$2
for s in arp_ignore:1 arp_announce:2; do
  have=$(cat "/proc/sys/net/ipv4/conf/all/${s%%:*}")
  if [[ $have != "${s#*:}" ]]; then
    echo "run-dr-node.sh: net.ipv4.conf.all.${s%%:*} is $have, not ${s#*:} (set it in sysctls:)" >&2
    exit 1
  fi
done
ip addr replace "$vip/32" dev lo
exec tether gateway --config "$config"
