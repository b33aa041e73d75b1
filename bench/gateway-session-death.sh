#!/usr/bin/env bash
# What a dead on-prem session leaves on a cloud node: 8 forward streams are pushed full
# (64 MiB each, bounded) towards a server that accepts and never reads, then the on-prem
# gateway is SIGKILLed. Prints the cloud node's RSS and its sockets to the server while
# stuck and 8 s after the session died. Loopback only; ports 17601-17605.
# Usage: bench/gateway-session-death.sh [TETHER_BINARY]   (default target/debug/tether)
set -u
T=$(realpath "${1:-target/debug/tether}")
D=$(mktemp -d /tmp/rssgw.XXXX); cd $D
$T gateway certs --out certs --names cloud1,onprem1 >/dev/null
S=17601; C=17602; A1=17603; A2=17604; SRV=17605
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
[timers]
ping = "1s"
dead_after = "3s"
[[forward]]
service = "svc-b"
connect = "127.0.0.1:$SRV"
allowed_consumers = ["onprem1"]
EOT
cat > onprem.toml <<EOT
[node]
role = "onprem"
id = "onprem1"
cloud = "127.0.0.1:$S"
server_name = "gw.example.com"
admin_listen = "127.0.0.1:$A2"
[tls]
cert = "certs/onprem1.pem"
key = "certs/onprem1.key"
ca = "certs/ca.pem"
[timers]
ping = "1s"
dead_after = "3s"
[[consume]]
service = "svc-b"
listen = "127.0.0.1:$C"
EOT
# A server that accepts and never reads.
python3 -c "
import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('127.0.0.1',$SRV)); s.listen(64)
held=[]
s.settimeout(120)
try:
  while True: held.append(s.accept()[0])
except Exception: pass
" & SRVPID=$!
$T gateway --config cloud.toml 2>cloud.log & CL=$!
$T gateway --config onprem.toml 2>onprem.log & OP=$!
sleep 3
rss() { awk '/VmRSS/{printf "%d MiB", $2/1024}' /proc/$CL/status; }
socks() { ss -tnH state established "( dport = :$SRV )" | wc -l; }
echo "idle: cloud RSS $(rss)"
# 8 clients push 64 MiB each (bounded), through on-prem's consume port.
python3 -c "
import socket,threading
def push():
  c=socket.create_connection(('127.0.0.1',$C)); c.settimeout(10)
  buf=b'x'*65536
  try:
    for _ in range(1024): c.sendall(buf)
  except Exception: pass
  import time; time.sleep(30)
ts=[threading.Thread(target=push,daemon=True) for _ in range(8)]
[t.start() for t in ts]; [t.join(40) for t in ts]
" & PUSH=$!
sleep 15
echo "8 streams stuck on a server that does not read: cloud RSS $(rss), cloud->server sockets $(socks)"
kill -9 $OP
sleep 8
echo "8 s after on-prem was killed (session dead): cloud RSS $(rss), cloud->server sockets $(socks)"
kill $PUSH 2>/dev/null; kill $CL $SRVPID 2>/dev/null; wait 2>/dev/null
grep -c "session down" cloud.log | sed 's/^/cloud logged session down: /'
cd /; rm -rf $D
