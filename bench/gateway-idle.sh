#!/usr/bin/env bash
# Memory per idle connection through the gateway: a cloud node and an on-prem gateway on
# loopback, an echo server behind the on-prem export, and N clients of the cloud node's
# reverse service that each exchange one message and then stay open, idle. Prints VmRSS of
# both gateway processes at each checkpoint and the slope in KiB per connection.
#
# 10,000 streams do not fit the defaults of one on-prem gateway: a session carries at most
# 512 streams ([limits] max_streams) and our opens stop an eighth short (448), and
# prepared_connections is at most 16, so 16 x 448 = 7,168. This bench therefore sets
# prepared_connections = 16 and max_streams = 1024 on both sides (16 x 896 = 14,336) for
# every checkpoint, so that the slope is measured with one configuration. PREPARED and
# MAX_STREAMS in the environment override the two (PREPARED=16 MAX_STREAMS=512 with
# checkpoints up to 7,000 measures the default cap).
#
# Loopback only, ports 17621-17625; stops only the processes it started, by pid; the
# whole run is bounded by `timeout`. Needs an open-file limit of about N + 1,000 per process
# (raised to the hard limit here).
# Usage: bench/gateway-idle.sh [TETHER_BINARY] [CHECKPOINTS]
#   (default target/release/tether, checkpoints "1000 10000"). MSG_BYTES sets the size of
#   each client's one message (default 16).
set -u
T=$(realpath "${1:-target/release/tether}")
CHECKS=${2:-"1000 10000"}
ulimit -n "$(ulimit -Hn)" || true
D=$(mktemp -d /tmp/gwidle.XXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$D"
"$T" gateway certs --out certs --names cloud1,onprem1 >/dev/null || exit 1
S=17621; PORT=17622; A1=17623; A2=17624; ECHO=17625
PREPARED=${PREPARED:-16}
LIMITS="[limits]
max_streams = ${MAX_STREAMS:-1024}"
cat > cloud.toml <<EOT
[node]
role = "cloud"
id = "cloud1"
session_listen = "127.0.0.1:$S"
admin_listen = "127.0.0.1:$A1"
[tls]
cert = "certs/cloud1.pem"
key = "certs/cloud1.key"
client_ca = "certs/ca.pem"
$LIMITS
[[reverse]]
service = "svc-a"
listen = "127.0.0.1:$PORT"
allowed_exporters = ["onprem1"]
EOT
cat > onprem.toml <<EOT
[node]
role = "onprem"
id = "onprem1"
cloud = "127.0.0.1:$S"
server_name = "cloud1"
sni_pinning = false
prepared_connections = $PREPARED
admin_listen = "127.0.0.1:$A2"
[tls]
cert = "certs/onprem1.pem"
key = "certs/onprem1.key"
ca = "certs/ca.pem"
$LIMITS
[[export]]
service = "svc-a"
connect = "127.0.0.1:$ECHO"
EOT
# The echo server: one asyncio task per connection, echoing what it reads.
python3 -c "
import asyncio
async def echo(r, w):
    while data := await r.read(65536):
        w.write(data); await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(echo, '127.0.0.1', $ECHO, backlog=4096)
    await s.serve_forever()
asyncio.run(main())
" & PIDS+=($!)
"$T" gateway --config cloud.toml 2>cloud.log & CL=$!; PIDS+=($CL)
"$T" gateway --config onprem.toml 2>onprem.log & OP=$!; PIDS+=($OP)
# Ready once every prepared session is up (the cloud node's sessions gauge sums to them).
sessions() {
    curl -sf "http://127.0.0.1:$A1/metrics" |
        awk '/^tether_gateway_sessions\{/{n+=$2} END{print n+0}'
}
for _ in $(seq 150); do [ "$(sessions)" = "$PREPARED" ] && break; sleep 0.2; done
[ "$(sessions)" = "$PREPARED" ] || { echo "sessions did not come up"; tail cloud.log onprem.log; exit 1; }
# The clients: open connections up to each checkpoint, each sends MSG_BYTES and reads the
# echo (so the stream was relayed both ways), and stays open. At 0 and at each checkpoint,
# once every client got its echo and a second has passed, read VmRSS of both gateways.
timeout 600 python3 - "$PORT" "$CL" "$OP" "${MSG_BYTES:-16}" $CHECKS <<'EOPY'
import socket, sys, time
port, cl, op = int(sys.argv[1]), sys.argv[2], sys.argv[3]
size = int(sys.argv[4])
checks = [int(c) for c in sys.argv[5:]]
def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
held = []
def point():
    time.sleep(1)
    return (len(held), rss(cl), rss(op))
rows = [point()]
msg = bytes(i % 251 for i in range(size))
for target in checks:
    while len(held) < target:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            chunk = s.recv(len(msg) - len(got))
            if not chunk:
                sys.exit(f"connection {len(held)} closed before its echo")
            got += chunk
        held.append(s)
    rows.append(point())
print(f"{'idle conns':>10} {'cloud KiB':>10} {'onprem KiB':>11} {'sum KiB':>9}")
for n, c, o in rows:
    print(f"{n:>10} {c:>10} {o:>11} {c + o:>9}")
print("slope, KiB per connection (cloud + onprem = sum):")
for (n0, c0, o0), (n1, c1, o1) in zip(rows, rows[1:]):
    dn = n1 - n0
    print(f"  {n0:>6} -> {n1:<6} {(c1 - c0) / dn:7.2f} + {(o1 - o0) / dn:7.2f} = {(c1 + o1 - c0 - o0) / dn:7.2f}")
EOPY
