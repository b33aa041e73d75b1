#!/usr/bin/env bash
# What one session can make a cloud node buffer: an on-prem gateway opens every
# forward stream the session may carry (the control stream plus 511 data streams under the
# default [limits] max_streams = 512), each towards a server that accepts and never reads,
# and its clients push until they block. Prints the cloud node's RSS idle and once every
# client is blocked, and what the clients got accepted. Loopback only; ports 17611-17615.
# Usage: bench/gateway-session-bound.sh [TETHER_BINARY] [STREAMS] [MIB_PER_CLIENT]
#   (default target/debug/tether, 511 streams, 8 MiB). For a binary without the [limits]
#   section (yamux 0.12, before the bound), run with NO_LIMITS=1.
set -u
T=$(realpath "${1:-target/debug/tether}")
N=${2:-511}
MIB=${3:-8}
LIMITS="[limits]
max_streams = 585
session_window_mib = 160"
[ -n "${NO_LIMITS:-}" ] && LIMITS=""
D=$(mktemp -d /tmp/gwbound.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT INT TERM
cd "$D"
$T gateway certs --out certs --names cloud1,onprem1 >/dev/null
S=17611; C=17612; A1=17613; A2=17614; SRV=17615
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
[[forward]]
service = "svc-b"
connect = "127.0.0.1:$SRV"
allowed_consumers = ["onprem1"]
EOT
# The peer may open as many streams as the cloud node's cap allows: its own cap is set
# higher so that its opens stop (an eighth short of its cap) at exactly 512.
cat > onprem.toml <<EOT
[node]
role = "onprem"
id = "onprem1"
cloud = "127.0.0.1:$S"
server_name = "gw.example.com"
prepared_connections = 1
admin_listen = "127.0.0.1:$A2"
[tls]
cert = "certs/onprem1.pem"
key = "certs/onprem1.key"
ca = "certs/ca.pem"
$LIMITS
[[consume]]
service = "svc-b"
listen = "127.0.0.1:$C"
accept_wait = "10s"
EOT
# A server that accepts and never reads, with small receive buffers so the kernel holds
# little of what the cloud node sends it.
python3 -c "
import socket,signal
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,4096)
s.bind(('127.0.0.1',$SRV)); s.listen(4096)
held=[]
while True: held.append(s.accept()[0])
" & PIDS+=($!)
$T gateway --config cloud.toml 2>cloud.log & CL=$!; PIDS+=($CL)
$T gateway --config onprem.toml 2>onprem.log & OP=$!; PIDS+=($OP)
# Ready once the consume listener is bound (on-prem holds a session that accepts svc-b).
for _ in $(seq 150); do curl -sf "http://127.0.0.1:$A2/readyz/svc-b" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$A2/readyz/svc-b" >/dev/null || { echo "no session came up"; tail cloud.log onprem.log; exit 1; }
rss() { awk '/VmRSS/{print $2}' /proc/$CL/status; }
IDLE=$(rss)
echo "idle, one session up: cloud RSS $((IDLE / 1024)) MiB"
# N clients, each pushing up to MIB MiB; a client is done when a send makes no progress
# for 3 s (blocked by the flow control all the way back). The pusher then says so on a
# FIFO and keeps its sockets open.
mkfifo pushed
python3 -c "
import socket,threading,time
sent=[0]*$N; hold=[]
def push(i):
  c=socket.socket(); c.setsockopt(socket.SOL_SOCKET,socket.SO_SNDBUF,65536)
  c.connect(('127.0.0.1',$C)); c.settimeout(3)
  buf=b'x'*65536
  try:
    for _ in range($MIB*16):
      c.sendall(buf); sent[i]+=len(buf)
  except Exception: pass
  hold.append(c)
ts=[threading.Thread(target=push,args=(i,)) for i in range($N)]
[t.start() for t in ts]; [t.join() for t in ts]
blocked=sum(1 for x in sent if x < $MIB*16*65536)
open('pushed','w').write('%d clients, %d blocked before $MIB MiB, %d MiB accepted in all\\n' % ($N, blocked, sum(sent)>>20))
while True: time.sleep(60)
" & PIDS+=($!)
# Opened read-write so that a pusher that died cannot leave the open blocked.
exec 3<>pushed
read -r -t 600 PUSHED <&3 || { echo "the clients never finished"; exit 1; }
FULL=$(rss)
metric() { curl -s "http://127.0.0.1:$A1/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s+=$2} END {print s+0}'; }
echo "clients: $PUSHED"
echo "every stream full: cloud RSS $((FULL / 1024)) MiB (+$(((FULL - IDLE) / 1024)) MiB), \
streams relayed $(metric tether_gateway_streams_active), sessions $(metric tether_gateway_sessions)"
kill -9 $OP
for _ in $(seq 150); do [ "$(metric tether_gateway_streams_active)" = 0 ] && break; sleep 0.2; done
echo "on-prem killed, its session's streams all ended: cloud RSS $(($(rss) / 1024)) MiB"
