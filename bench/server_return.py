#!/usr/bin/env python3
"""How long a server that comes back waits before `tether lb` sends it connections again.

Runs `tether lb` on loopback in front of one `tether echo` server with the default health
check (tcp every 2 s, rise 2, fall 3), kills the server (SIGKILL), waits until the balancer
marks it down, starts it again, and measures from the server's "ready" line to the
balancer's "server health changed ... to=up" line. Repeats N times, for two settings in
turn: the defaults (fast_interval and down_interval at most 250 ms and 500 ms) and
`fast_interval = down_interval = interval` (HAProxy's defaults, and Tether's before).

    bench/server_return.py [--runs 20] [--tether target/release/tether]

Every wait is bounded; only processes this script started are stopped, by pid.
"""

import argparse
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child whose output lines arrive on a queue with the time they were read."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put((time.monotonic(), line))

    def wait_for(self, needle, timeout=20):
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line with {needle!r} within {timeout} s")
            try:
                t, line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if needle in line:
                return t

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def measure(tether, runs, extra):
    port, front, admin = free_port(), free_port(), free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(
        f'[admin]\nlisten = "127.0.0.1:{admin}"\n\n'
        f'[[frontend]]\nname = "fe"\nbind = ["127.0.0.1:{front}"]\nbackend = "be"\n\n'
        f'[[backend]]\nname = "be"\n[backend.health]\nkind = "tcp"\n{extra}\n'
        f'[[backend.server]]\nname = "s1"\naddress = "127.0.0.1:{port}"\n'
    )
    cfg.close()
    echo_argv = [tether, "echo", "--listen", f"127.0.0.1:{port}", "--banner", "s1"]
    env_lb = [tether, "lb", "--workers", "1", "--config", cfg.name]
    echo = Proc(echo_argv)
    echo.wait_for("echo server ready")
    lb = Proc(env_lb)
    delays = []
    try:
        lb.wait_for('to="up"')
        for _ in range(runs):
            echo.stop(signal.SIGKILL)
            lb.wait_for("server down", timeout=30)
            echo = Proc(echo_argv)
            ready = echo.wait_for("echo server ready")
            up = lb.wait_for('to="up"', timeout=30)
            delays.append(up - ready)
    finally:
        echo.stop(signal.SIGKILL)
        lb.stop()
        os.unlink(cfg.name)
    return delays


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--tether", default=os.path.join(ROOT, "target/release/tether"))
    a = ap.parse_args()
    rows = [
        ("defaults (fast 250 ms, down 500 ms)", ""),
        ("one interval (HAProxy's defaults)", 'fast_interval = "2s"\ndown_interval = "2s"\n'),
    ]
    print(f"server back -> balancer sends it connections; tcp check every 2 s, rise 2; {a.runs} runs each")
    print("| settings | p50 | p99 | max |")
    print("|---|---|---|---|")
    for name, extra in rows:
        d = measure(a.tether, a.runs, extra)
        print(f"| {name} | {statistics.median(d):.2f} s | {pct(d, 99):.2f} s | {max(d):.2f} s |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
