#!/usr/bin/env python3
"""The forwarding tier against the proxies, in network namespaces, in one run.

Namespaces: a client, a balancer and two servers on one bridge (the bridge in a namespace
of its own), 192.0.2.0/24. Paths: `direct` (client to one server), `tether-dr` (`tether lb`
mode = "dr"), `tether-proxy` (`tether lb`, one worker) and `haproxy` (HAProxy `mode tcp`,
one thread). Nothing is pinned: client, balancer and servers share the machine's cores, as
on a small host.

- conn: new connections per second, wrk with `Connection: close` (2 threads, 64
  connections) against nginx on both servers; whole-machine CPU per connection from
  /proc/stat. A balancer's cost is its figure minus direct's.
- bulk: iperf3, one stream, to one server; whole-machine CPU seconds per GB.

Every repetition runs every path in turn, the order rotating; medians are reported. Every
load is bounded (wrk -d, iperf3 -t). The namespaces, and only the processes this run
started, are removed on exit, on error and on SIGINT/SIGTERM.
"""

import argparse
import atexit
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = f"trdb{os.getpid() % 100000}"
NET = "192.0.2"
HOSTS = {"c": 50, "lb": 11, "s1": 21, "s2": 22}
VIP = f"{NET}.100"
HTTP_PORT = 8080
BULK_PORT = 5201
PROXY_HTTP = {"tether-proxy": 8081, "haproxy": 8082}
PROXY_BULK = {"tether-proxy": 5202, "haproxy": 5203}
ADMIN = 9090

started = []  # Popen objects this run started
namespaces = []


def ns(h):
    return f"{PREFIX}-{h}"


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def in_ns(h, *args, check=True):
    return sh("ip", "netns", "exec", ns(h), *args, check=check)


def spawn(h, *args, log=None):
    out = open(log, "w") if log else subprocess.DEVNULL
    p = subprocess.Popen(["ip", "netns", "exec", ns(h), *args], stdout=out, stderr=subprocess.STDOUT)
    started.append(p)
    return p


def cleanup():
    for p in reversed(started):
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + 5
    for p in started:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for n in namespaces:
        sh("ip", "netns", "del", n, check=False)
    namespaces.clear()


def on_signal(sig, _frame):
    cleanup()
    sys.exit(128 + sig)


def build_lab():
    br = f"{PREFIX}-br"
    sh("ip", "netns", "add", br)
    namespaces.append(br)
    sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", br, "link", "set", "br0", "up")
    for h, octet in HOSTS.items():
        sh("ip", "netns", "add", ns(h))
        namespaces.append(ns(h))
        sh("ip", "-n", br, "link", "add", h, "type", "veth", "peer", "name", "eth0", "netns", ns(h))
        sh("ip", "-n", br, "link", "set", h, "master", "br0", "up")
        in_ns(h, "ip", "link", "set", "lo", "up")
        in_ns(h, "ip", "link", "set", "eth0", "up")
        in_ns(h, "ip", "addr", "add", f"{NET}.{octet}/24", "dev", "eth0")
    # The client reaches the VIP through the balancer, as a router would send it.
    in_ns("c", "ip", "route", "add", VIP, "via", f"{NET}.{HOSTS['lb']}")
    for s in ("s1", "s2"):
        in_ns(s, "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        in_ns(s, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
        in_ns(s, "sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2")
    # Many short connections from one client address.
    for h in HOSTS:
        in_ns(h, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
        in_ns(h, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")


def start_servers(work):
    for s in ("s1", "s2"):
        d = os.path.join(work, s)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "index.html"), "w") as f:
            f.write("x" * 100)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen {HTTP_PORT} reuseport backlog=4096; root {d}; }} }}
""")
        spawn(s, "nginx", "-c", conf, log=os.path.join(d, "nginx.log"))
        spawn(s, "iperf3", "-s", "-p", str(BULK_PORT), log=os.path.join(d, "iperf3.log"))


def start_balancers(work, tether):
    lb_ip = f"{NET}.{HOSTS['lb']}"
    servers = "".join(
        f'[[backend.server]]\nname = "{s}"\naddress = "{NET}.{HOSTS[s]}:{HTTP_PORT}"\n' for s in ("s1", "s2")
    )
    bulk_server = f'[[backend.server]]\nname = "s1"\naddress = "{NET}.21:{BULK_PORT}"\n'
    check = '[backend.health]\nkind = "tcp"\ninterval = "1s"\n'
    dr = f"""[admin]
listen = "127.0.0.1:{ADMIN}"
[[frontend]]
name = "http-dr"
mode = "dr"
bind = ["{VIP}:{HTTP_PORT}"]
interface = "eth0"
backend = "web"
[[frontend]]
name = "bulk-dr"
mode = "dr"
bind = ["{VIP}:{BULK_PORT}"]
interface = "eth0"
backend = "bulk"
[[frontend]]
name = "http-proxy"
bind = ["{lb_ip}:{PROXY_HTTP['tether-proxy']}"]
backend = "web"
[[frontend]]
name = "bulk-proxy"
bind = ["{lb_ip}:{PROXY_BULK['tether-proxy']}"]
backend = "bulk"
[[backend]]
name = "web"
{check}{servers}
[[backend]]
name = "bulk"
{check}{bulk_server}"""
    cfg = os.path.join(work, "lb.toml")
    with open(cfg, "w") as f:
        f.write(dr)
    env_log = os.path.join(work, "tether.log")
    spawn("lb", "env", "RUST_LOG=warn", tether, "lb", "--workers", "1", "--config", cfg, log=env_log)
    hcfg = os.path.join(work, "haproxy.cfg")
    with open(hcfg, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend http
  bind {lb_ip}:{PROXY_HTTP['haproxy']}
  default_backend web
frontend bulk
  bind {lb_ip}:{PROXY_BULK['haproxy']}
  default_backend bulk
backend web
  server s1 {NET}.21:{HTTP_PORT} check
  server s2 {NET}.22:{HTTP_PORT} check
backend bulk
  server s1 {NET}.21:{BULK_PORT} check
""")
    spawn("lb", "haproxy", "-f", hcfg, "-db", log=os.path.join(work, "haproxy.log"))
    # Ready: tether's /readyz says every frontend is in place and has a server up.
    deadline = time.time() + 20
    while time.time() < deadline:
        r = in_ns("lb", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{ADMIN}/readyz", check=False)
        if r.stdout.strip() == "200":
            return
        time.sleep(0.2)
    raise SystemExit(f"tether lb not ready: {open(env_log).read()[-2000:]}")


def machine_cpu():
    """Busy CPU seconds of the whole machine."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def conn_target(path):
    if path == "direct":
        return f"{NET}.21:{HTTP_PORT}"
    if path == "tether-dr":
        return f"{VIP}:{HTTP_PORT}"
    return f"{NET}.{HOSTS['lb']}:{PROXY_HTTP[path]}"


def bulk_target(path):
    if path == "direct":
        return (f"{NET}.21", BULK_PORT)
    if path == "tether-dr":
        return (VIP, BULK_PORT)
    return (f"{NET}.{HOSTS['lb']}", PROXY_BULK[path])


def run_conn(path, seconds):
    c0 = machine_cpu()
    r = in_ns("c", "wrk", "-t2", "-c64", f"-d{seconds}s", "-H", "Connection: close", f"http://{conn_target(path)}/", check=False)
    cpu = machine_cpu() - c0
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    n = re.search(r"(\d+) requests in", r.stdout)
    errs = re.search(r"Socket errors: (.*)", r.stdout)
    if not m or not n:
        raise SystemExit(f"wrk via {path}: {r.stdout}{r.stderr}")
    reqs = int(n.group(1))
    return {"rate": float(m.group(1)), "cpu_us": cpu / reqs * 1e6, "errors": errs.group(1) if errs else ""}


def run_bulk(path, seconds):
    host, port = bulk_target(path)
    for _attempt in range(5):
        c0 = machine_cpu()
        r = in_ns("c", "iperf3", "-J", "-c", host, "-p", str(port), "-t", str(seconds), check=False)
        cpu = machine_cpu() - c0
        try:
            j = json.loads(r.stdout)
        except ValueError:
            j = {"error": r.stdout + r.stderr}
        if "error" in j and "busy" in j["error"]:
            time.sleep(0.5)  # the previous test may still be closing
            continue
        if "error" in j:
            raise SystemExit(f"iperf3 via {path}: {j['error']}")
        bits = j["end"]["sum_received"]["bits_per_second"]
        gb = j["end"]["sum_received"]["bytes"] / 1e9
        return {"gbit": bits / 1e9, "cpu_s_per_gb": cpu / gb}
    raise SystemExit(f"iperf3 via {path}: server stayed busy")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tether-bin", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    atexit.register(cleanup)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    work = tempfile.mkdtemp(prefix="tether-dr-bench-")
    build_lab()
    start_servers(work)
    start_balancers(work, a.tether_bin)
    paths = ["direct", "tether-dr", "tether-proxy", "haproxy"]
    samples = {p: {"conn": [], "bulk": []} for p in paths}
    for rep in range(a.reps):
        order = paths[rep % len(paths):] + paths[: rep % len(paths)]
        for p in order:
            samples[p]["conn"].append(run_conn(p, a.seconds))
            samples[p]["bulk"].append(run_bulk(p, a.seconds))
            print(f"rep {rep + 1} {p}: {samples[p]['conn'][-1]} {samples[p]['bulk'][-1]}", file=sys.stderr)

    def med(p, test, key):
        return statistics.median(s[key] for s in samples[p][test])

    d_us = med("direct", "conn", "cpu_us")
    d_gb = med("direct", "bulk", "cpu_s_per_gb")
    lines = [
        f"# Forwarding tier benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {a.reps} x {a.seconds} s, medians, nothing pinned, {os.cpu_count()} CPUs)",
        "",
        "| path | new connections/s | machine CPU µs per connection | overhead over direct (µs) | bulk Gbit/s | CPU s per GB | wrk socket errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in paths:
        us = med(p, "conn", "cpu_us")
        errs = "; ".join(sorted({s["errors"] for s in samples[p]["conn"] if s["errors"]})) or "none"
        lines.append(
            f"| {p} | {med(p, 'conn', 'rate'):,.0f} | {us:.1f} | {us - d_us:.1f} | {med(p, 'bulk', 'gbit'):.2f} | {med(p, 'bulk', 'cpu_s_per_gb'):.2f} | {errs} |"
        )
    hap_rate = med("haproxy", "conn", "rate")
    dr_rate = med("tether-dr", "conn", "rate")
    hap_over = med("haproxy", "conn", "cpu_us") - d_us
    dr_over = med("tether-dr", "conn", "cpu_us") - d_us
    lines += [
        "",
        "| ratio | target | measured |",
        "|---|---|---|",
        f"| tether dr / HAProxy, connections/s | >= 1.8 | {dr_rate / hap_rate:.2f} |",
        f"| tether dr / direct, connections/s | >= 0.7 | {dr_rate / med('direct', 'conn', 'rate'):.2f} |",
        f"| tether dr / HAProxy, CPU overhead per connection | <= 0.35 | {dr_over / hap_over:.2f} |" if hap_over > 0 else "| tether dr / HAProxy, CPU overhead per connection | <= 0.35 | n/a |",
        f"| tether dr / direct, bulk | >= 0.9 | {med('tether-dr', 'bulk', 'gbit') / med('direct', 'bulk', 'gbit'):.2f} |",
        f"| tether proxy / HAProxy, connections/s | – | {med('tether-proxy', 'conn', 'rate') / hap_rate:.2f} |",
        "",
        f"Overhead over direct: CPU per GB, tether dr {med('tether-dr', 'bulk', 'cpu_s_per_gb') - d_gb:.2f} s, HAProxy {med('haproxy', 'bulk', 'cpu_s_per_gb') - d_gb:.2f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        with open(re.sub(r"\.md$", ".json", a.out), "w") as f:
            json.dump(samples, f, indent=1)


if __name__ == "__main__":
    main()
