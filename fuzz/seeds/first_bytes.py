#!/usr/bin/env python3
"""Records the first bytes a client sends: a loopback listener that keeps what arrives on
each connection until the client goes quiet, writes it to OUT_DIR/PREFIX-N and closes.

Usage: first_bytes.py PORT OUT_DIR PREFIX COUNT
Stops after COUNT connections or 30 s, whichever comes first.
"""
import socket
import sys
import time

port, out, prefix, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(16)
srv.settimeout(30)
print("ready", flush=True)
deadline = time.monotonic() + 30
seen = set()
n = 0
while n < count and time.monotonic() < deadline:
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        break
    conn.settimeout(0.5)
    data = b""
    while len(data) < 65536:
        try:
            chunk = conn.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    conn.close()
    if data and data not in seen:
        seen.add(data)
        with open(f"{out}/{prefix}-{n}", "wb") as f:
            f.write(data)
        n += 1
