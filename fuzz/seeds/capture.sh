#!/usr/bin/env bash
# Captures the seeds that come from real programs, inside a network namespace of its own
# (its loopback and one veth pair; nothing leaves it):
#   - ClientHellos of openssl s_client, curl and headless Chromium  -> lb_client_hello
#   - PROXY v1/v2 headers HAProxy sends to a server, IPv4 and IPv6  -> lb_proxy_header
#   - keepalived 2.2.7 adverts, v2 (PASS), v3 IPv4 and IPv6, and its
#     priority-0 adverts at shutdown                                 -> vrrp_ipv4, vrrp_ipv6
#
#   fuzz/seeds/capture.sh [OUT]      (as root; OUT defaults to fuzz/corpus)
#
# Needs openssl, curl, chromium, haproxy, keepalived and tshark (Debian packages).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:-$here/../corpus}")
work=$(mktemp -d)
ns=tfz-seeds-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
# Background programs start with `ip netns exec` itself (it execs), so $! is their pid.
in_ns() { ip netns exec "$ns" "$@"; }

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add veth0 type veth peer name veth1
ip -n "$ns" addr add 192.0.2.2/24 dev veth0
ip -n "$ns" addr add 2001:db8::2/64 dev veth0
ip -n "$ns" link set veth0 up
ip -n "$ns" link set veth1 up
mkdir -p "$out"/{lb_client_hello,lb_proxy_header,vrrp_ipv4,vrrp_ipv6}

# First bytes a client sends: the recorder takes one connection per call.
record() { # PORT TARGET NAME COUNT, then the client command
  local port=$1 target=$2 name=$3 count=$4
  shift 4
  rm -f "$work/rec"
  ip netns exec "$ns" python3 "$here/first_bytes.py" "$port" "$out/$target" "$name" "$count" >"$work/rec" 2>&1 &
  local rec=$!
  until grep -q ready "$work/rec" 2>/dev/null; do sleep 0.1; done
  in_ns timeout 20 "$@" </dev/null >/dev/null 2>&1 || true
  wait "$rec"
}
p=8443
record $p lb_client_hello openssl-tls13 1 openssl s_client -connect 127.0.0.1:$p -servername api.example.com
record $p lb_client_hello openssl-tls12 1 openssl s_client -connect 127.0.0.1:$p -servername Legacy.Example.COM -tls1_2
record $p lb_client_hello openssl-nosni 1 openssl s_client -connect 127.0.0.1:$p -noservername
record $p lb_client_hello curl 1 curl -s --resolve www.example.com:$p:127.0.0.1 https://www.example.com:$p/
record $p lb_client_hello curl-tls12 1 curl -s --tlsv1.2 --tls-max 1.2 --resolve www.example.com:$p:127.0.0.1 https://www.example.com:$p/
record $p lb_client_hello chromium 3 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$work/chromium" \
  --host-resolver-rules="MAP * 127.0.0.1" https://shop.example.com:$p/

# HAProxy in front of the recorder: one frontend per PROXY flavour.
cat >"$work/haproxy.cfg" <<EOF
defaults
    mode tcp
    timeout connect 2s
    timeout client 5s
    timeout server 5s
    unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt
frontend fe1
    bind 127.0.0.1:7001
    bind [::1]:7001
    default_backend be1
backend be1
    server rec 127.0.0.1:7000 send-proxy
frontend fe2
    bind 127.0.0.1:7002
    bind [::1]:7002
    default_backend be2
backend be2
    server rec 127.0.0.1:7000 send-proxy-v2
frontend fe3
    bind 127.0.0.1:7003
    bind [::1]:7003
    default_backend be3
backend be3
    server rec 127.0.0.1:7000 send-proxy-v2 proxy-v2-options authority,unique-id,crc32c,ssl
EOF
ip netns exec "$ns" haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
sleep 1
for fe in 1 2 3; do
  for fam in v4 v6; do
    ip=127.0.0.1
    [[ $fam == v6 ]] && ip=::1
    record 7000 lb_proxy_header "haproxy-fe$fe-$fam" 1 python3 -c "
import socket, time
s = socket.create_connection(('$ip', 700$fe)); s.sendall(b'GET / HTTP/1.0\r\n\r\n'); time.sleep(0.8)"
  done
done

# keepalived's adverts as they leave veth0, then its priority-0 adverts on SIGTERM.
cat >"$work/keepalived.conf" <<'EOF'
global_defs {
    router_id fuzzseeds
}
vrrp_instance V2 {
    state MASTER
    interface veth0
    virtual_router_id 51
    priority 100
    advert_int 1
    version 2
    authentication {
        auth_type PASS
        auth_pass secret
    }
    virtual_ipaddress {
        192.0.2.100/24
    }
}
vrrp_instance V3 {
    state MASTER
    interface veth0
    virtual_router_id 52
    priority 150
    advert_int 0.5
    version 3
    virtual_ipaddress {
        192.0.2.101/24
        192.0.2.102/24
    }
}
vrrp_instance V36 {
    state MASTER
    interface veth0
    virtual_router_id 53
    priority 200
    advert_int 1
    version 3
    virtual_ipaddress {
        fe80::53/64
        2001:db8::101/64
    }
}
EOF
ip netns exec "$ns" tshark -q -i veth1 -f "ip proto 112 or ip6 proto 112" -F pcap -w "$work/vrrp.pcap" -a duration:30 >"$work/tshark.log" 2>&1 &
tshark_pid=$!
pids+=("$tshark_pid")
sleep 2
ip netns exec "$ns" keepalived -n -l -D -f "$work/keepalived.conf" -p "$work/keepalived.pid" -r "$work/vrrp.pid" >"$work/keepalived.log" 2>&1 &
ka=$!
pids+=("$ka")
sleep 6
kill "$ka"
wait "$ka" || true
sleep 1
kill -INT "$tshark_pid"
wait "$tshark_pid" || true
python3 - "$work/vrrp.pcap" "$out" <<'EOF'
import struct, sys
data, out = open(sys.argv[1], "rb").read(), sys.argv[2]
off, seen = 24, {}
while off < len(data):
    incl = struct.unpack("<I", data[off + 8:off + 12])[0]
    frame = data[off + 16:off + 16 + incl]
    off += 16 + incl
    ip = frame[14:]  # after the Ethernet header
    v4 = ip[0] >> 4 == 4
    msg = ip[(ip[0] & 15) * 4:] if v4 else ip[40:]
    seen.setdefault((v4, msg[0] >> 4, msg[1], msg[2]), ip)
for (v4, ver, vrid, prio), ip in seen.items():
    target = "vrrp_ipv4" if v4 else "vrrp_ipv6"
    with open(f"{out}/{target}/keepalived-capture-v{ver}-vrid{vrid}-prio{prio}", "wb") as f:
        f.write(ip)
EOF
echo "capture: seeds written under $out"
