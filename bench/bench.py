#!/usr/bin/env python3
"""Tether's benchmark: `tether lb` against HAProxy (mode tcp, with and without
`option splice-auto`) and nginx's stream module, plus "direct" (no proxy), in one run.

Started by bench/run.sh, which installs the peers and builds the binaries. Everything runs
on loopback. The proxy under test is pinned to one core (PROXY_CPU) and the load client and
the backends to the other (LOAD_CPU), for every proxy alike. Each repetition takes every
test for every target in turn (the order rotates between repetitions), so slow phases of a
noisy machine hit all targets alike; medians and spread are reported, and Tether's ratio
to each peer is the median of the per-repetition ratios.

Only processes this script started are signalled, by pid; every wait is bounded.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TETHER = os.path.join(ROOT, "target", "release", "tether")
TLOAD = os.path.join(HERE, "loadgen", "target", "release", "tether-bench-load")
TFLOOR = os.path.join(HERE, "loadgen", "target", "release", "tfloor")
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

PROXY_CPU = "0"
LOAD_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# Ports below the ephemeral range (32768-60999 by default) so no client socket takes them.
IPERF_PORT = 21101
HTTP_PORT = 21102
TARGETS = {
    # name: (bulk port, http port)
    "direct": (IPERF_PORT, HTTP_PORT),
    "tether": (21111, 21112),
    "haproxy": (21121, 21122),
    "haproxy-splice": (21131, 21132),
    "nginx": (21141, 21142),
    # Optional (--targets): Tether with splice(2) off, to see what splicing buys.
    "tether-copy": (21151, 21152),
    # Optional (--targets, with --old-bin): another tether build, for before/after ratios.
    "tether-old": (21161, 21162),
    # Optional (--targets): two workers/threads on both CPUs, for the scaling table. The
    # second worker shares CPU 1 with the load and the backends: on a 2-CPU machine this
    # shows the cost of a second thread more than the headroom it would have elsewhere.
    "tether-w2": (21171, 21172),
    "haproxy-w2": (21181, 21182),
    # The yardstick: `tfloor` (bench/loadgen/src/bin/tfloor.rs), a relay that makes only the
    # system calls relaying needs, with no timeouts, limits, metrics or logs. No proxy with
    # the same behaviour on the wire can cost the kernel less per connection.
    "floor": (21191, 21192),
}
# Scaling rows: (two-worker target, its one-worker counterpart).
SCALING = [("tether-w2", "tether"), ("haproxy-w2", "haproxy")]
DEFAULT_TARGETS = ["direct", "floor", "tether", "haproxy", "haproxy-splice", "nginx", "tether-w2", "haproxy-w2"]
PEERS = ["haproxy", "haproxy-splice", "nginx", "tether-copy", "tether-old", "floor"]

STARTED = []  # every Popen this script started, stopped at exit
WORK = None  # the run's temporary directory, set by main() (or by a sibling mode: unpinned.py)
ARGS = None


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def spawn(argv, cpu, name, env=None, stdout=None, user=None, cwd=None):
    """Starts and records a process, pinned to `cpu` (None: not pinned), as `user` and its
    group of the same name (None: this one). Its stderr goes to WORK/<name>.stderr."""
    full = (["taskset", "-c", cpu] if cpu is not None else []) + argv
    errf = open(os.path.join(WORK, f"{name}.stderr"), "ab")
    p = subprocess.Popen(
        full,
        stdout=stdout if stdout is not None else errf,
        stderr=errf,
        env=env,
        start_new_session=True,
        cwd=cwd,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
    )
    p.bench_name = name
    STARTED.append(p)
    return p


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    """The process and its descendants (nginx: master and workers)."""
    pids, todo = [], [pid]
    while todo and len(pids) < 64:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def stop(p, timeout=10):
    if p.poll() is not None:
        return
    kids = tree(p.pid)[1:]
    try:
        # SIGTERM, unless the process wants another to stop promptly (PostgreSQL: SIGINT,
        # its fast shutdown; SIGTERM would wait for every client to leave).
        p.send_signal(getattr(p, "bench_stop_signal", signal.SIGTERM))
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    for k in kids:  # workers of a master we started, if the master left them behind
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_all():
    for p in reversed(STARTED):
        try:
            stop(p, timeout=5)
        except Exception as e:  # keep stopping the others
            log(f"stopping {getattr(p, 'bench_name', p.pid)}: {e}")


def cpu_seconds(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLK_TCK


def ctxt_switches(pid):
    """(voluntary, involuntary) context switches summed over every thread of the process
    tree. Voluntary: the proxy went to sleep waiting for events (each needs a wake-up);
    involuntary: the scheduler took its CPU away while it had work."""
    vol = invol = 0
    for p in tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            invol += int(line.split()[1])
            except OSError:
                pass
    return vol, invol


def sleeps(pid):
    """Voluntary context switches of every thread of the process tree: how often the proxy
    went to sleep waiting for events (each one needs a wake-up from the other CPU)."""
    return ctxt_switches(pid)[0]


def thread_count(pid):
    """Threads of the process tree (a proxy's workers show here)."""
    n = 0
    for p in tree(pid):
        try:
            n += len(os.listdir(f"/proc/{p}/task"))
        except OSError:
            pass
    return n


def mem_kb(pid):
    """(VmRSS, VmHWM) in KiB, summed over the process tree."""
    rss = hwm = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    return rss, hwm


def listening(port):
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(want) and parts[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def wait_listening(p, ports, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"{what} exited with {p.returncode}; see {WORK}/{p.bench_name}.stderr")
        if all(listening(port) for port in ports):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {ports} within {timeout}s")


def wait_closed(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and listening(port):
        time.sleep(0.05)


# ---------------------------------------------------------------- configs


def write(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def start_backends(nofile):
    os.makedirs(os.path.join(WORK, "www"), exist_ok=True)
    # One small response: the new-connection and kept-alive tests measure per-request cost.
    with open(os.path.join(WORK, "www", "index.html"), "w") as f:
        f.write("x" * 99 + "\n")
    conf = write(
        "backend-nginx.conf",
        f"""
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {WORK}/backend-nginx.pid;
error_log {WORK}/backend-nginx.error.log warn;
events {{ worker_connections {nofile - 100}; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_header_timeout 300s;
    client_body_temp_path {WORK}/tmp; proxy_temp_path {WORK}/tmp; fastcgi_temp_path {WORK}/tmp;
    uwsgi_temp_path {WORK}/tmp; scgi_temp_path {WORK}/tmp;
    server {{
        listen 127.0.0.1:{HTTP_PORT} backlog=4096;
        root {WORK}/www;
        location / {{ }}
    }}
}}
""",
    )
    os.makedirs(os.path.join(WORK, "tmp"), exist_ok=True)
    web = spawn(["nginx", "-p", WORK, "-c", conf, "-e", f"{WORK}/backend-nginx.error.log"], LOAD_CPU, "backend-nginx")
    iperf = spawn(["iperf3", "-s", "-p", str(IPERF_PORT), "-B", "127.0.0.1"], LOAD_CPU, "backend-iperf3")
    wait_listening(web, [HTTP_PORT], "backend nginx")
    wait_listening(iperf, [IPERF_PORT], "backend iperf3")
    return [web, iperf]


def proxy_conf(name, maxconn):
    bulk, http = TARGETS[name]
    threads = 2 if name.endswith("-w2") else 1
    if name.startswith("tether"):
        return write(
            f"{name}.toml",
            f"""
[defaults]
connect_timeout = "2s"
client_timeout = "300s"
server_timeout = "300s"
retries = 0
maxconn = {maxconn}
{"splice = false" if name == "tether-copy" else "# splice = true: the default (a build older than the key, tether-old, rejects it)"}

[[frontend]]
name = "bulk"
bind = ["127.0.0.1:{bulk}"]
backend = "iperf"

[[frontend]]
name = "http"
bind = ["127.0.0.1:{http}"]
backend = "web"

[[backend]]
name = "iperf"
[backend.health]
kind = "none"
[[backend.server]]
name = "s1"
address = "127.0.0.1:{IPERF_PORT}"

[[backend]]
name = "web"
[backend.health]
kind = "none"
[[backend.server]]
name = "s1"
address = "127.0.0.1:{HTTP_PORT}"
""",
        )
    if name.startswith("haproxy"):
        splice = "    option splice-auto\n" if name == "haproxy-splice" else ""
        # Pipes take two descriptors each; HAProxy's default (maxconn / 4) would not fit the
        # open-file limit next to maxconn, and a few hundred is plenty for these tests.
        pipes = "    maxpipes 256\n" if name == "haproxy-splice" else ""
        return write(
            f"{name}.cfg",
            f"""
global
    nbthread {threads}
    maxconn {maxconn}
{pipes}
defaults
    mode tcp
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    maxconn {maxconn}
{splice}
frontend bulk
    bind 127.0.0.1:{bulk}
    default_backend iperf

frontend http
    bind 127.0.0.1:{http}
    default_backend web

backend iperf
    server s1 127.0.0.1:{IPERF_PORT}

backend web
    server s1 127.0.0.1:{HTTP_PORT}
""",
        )
    if name == "nginx":
        return write(
            "nginx-stream.conf",
            f"""
load_module {NGINX_STREAM_MODULE};
daemon off;
worker_processes 1;
worker_rlimit_nofile {2 * maxconn + 20};
pid {WORK}/nginx-stream.pid;
error_log {WORK}/nginx-stream.error.log warn;
events {{ worker_connections {2 * maxconn + 10}; }}
stream {{
    proxy_connect_timeout 2s;
    proxy_timeout 300s;
    server {{ listen 127.0.0.1:{bulk} backlog=4096; proxy_pass 127.0.0.1:{IPERF_PORT}; }}
    server {{ listen 127.0.0.1:{http} backlog=4096; proxy_pass 127.0.0.1:{HTTP_PORT}; }}
}}
""",
        )
    raise ValueError(name)


def proxy_cpus(name):
    """The CPUs a proxy may run on: its own, or both for the two-worker targets."""
    return f"{PROXY_CPU},{LOAD_CPU}" if name.endswith("-w2") else PROXY_CPU


def start_proxy(name, maxconn):
    conf = proxy_conf(name, maxconn) if name != "floor" else None
    if name.startswith("tether"):
        # No per-connection log lines: the peers are configured without logging too.
        env = dict(os.environ, RUST_LOG="warn")
        exe = ARGS.old_bin if name == "tether-old" else TETHER
        workers = "2" if name.endswith("-w2") else "1"
        argv = [exe, "lb", "--config", conf, "--workers", workers]
        if ARGS.tether_args:
            argv += ARGS.tether_args.split()
        p = spawn(argv, proxy_cpus(name), name, env=env)
    elif name.startswith("haproxy"):
        p = spawn(["haproxy", "-db", "-f", conf], proxy_cpus(name), name)
    elif name == "floor":
        bulk, http = TARGETS[name]
        p = spawn([TFLOOR, "--listen", f"127.0.0.1:{bulk}", "--to", f"127.0.0.1:{IPERF_PORT}",
                   "--listen", f"127.0.0.1:{http}", "--to", f"127.0.0.1:{HTTP_PORT}"], PROXY_CPU, name)
    else:
        p = spawn(["nginx", "-p", WORK, "-c", conf, "-e", f"{WORK}/nginx-stream.error.log"], PROXY_CPU, name)
    wait_listening(p, list(TARGETS[name]), name)
    return p


# ---------------------------------------------------------------- tests


def run_json(argv, timeout):
    full = ["taskset", "-c", LOAD_CPU] + argv
    try:
        r = subprocess.run(full, capture_output=True, timeout=timeout, text=True)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    if r.returncode != 0:
        return None, (r.stderr or r.stdout).strip()[-300:]
    try:
        return json.loads(r.stdout), None
    except json.JSONDecodeError:
        return None, f"unparsable output: {r.stdout[-200:]!r}"


def bulk(target, proc, streams):
    port = TARGETS[target][0]
    secs = ARGS.secs
    # iperf3's server takes one test at a time and may still be closing the previous one
    # (its control connection goes through the proxy): retry "busy" a few times.
    for attempt in range(6):
        c0 = cpu_seconds(proc.pid) if proc else 0.0
        out, err = run_json(
            ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-P", str(streams), "-J",
             "--connect-timeout", "3000"],
            timeout=secs + 20,
        )
        c1 = cpu_seconds(proc.pid) if proc else 0.0
        busy = "busy" in str(err or (out or {}).get("error", ""))
        if not busy:
            break
        time.sleep(0.5)
    if out is None or "error" in out:
        return {"error": err or out.get("error")}
    recv = out["end"]["sum_received"]
    res = {"gbps": recv["bits_per_second"] / 1e9}
    if proc:
        gb = recv["bytes"] / 1e9
        res["cpu_s_per_gb"] = (c1 - c0) / gb if gb > 0 else None
    return res


def http(target, proc, mode):
    port = TARGETS[target][1]
    c0 = cpu_seconds(proc.pid) if proc else 0.0
    z0 = sleeps(proc.pid) if proc else 0
    out, err = run_json(
        [TLOAD, mode, "--addr", f"127.0.0.1:{port}", "--conc", "64", "--secs", str(ARGS.secs),
         "--warmup-secs", "0.3"],
        timeout=ARGS.secs + 30,
    )
    c1 = cpu_seconds(proc.pid) if proc else 0.0
    z1 = sleeps(proc.pid) if proc else 0
    if out is None:
        return {"error": err}
    if out["errors"] and out["ok"] == 0:
        return {"error": out.get("first_error")}
    res = {"rps": out["rps"], "p50_ms": out["p50_us"] / 1000, "p99_ms": out["p99_us"] / 1000,
           "errors": out["errors"]}
    if proc and out["ok"]:
        # The CPU window covers the whole run, warm-up included: divide by every request.
        total = out["all_ok"]
        key = "cpu_us_per_conn" if mode == "conn" else "cpu_us_per_req"
        res[key] = (c1 - c0) * 1e6 / total
        res["sleeps_per_" + key.rsplit("_", 1)[1]] = (z1 - z0) / total
    return res


def idle(target, maxconn):
    """Fresh proxy; RSS with 0, 1,000 and ARGS.idle idle connections held through it."""
    proc = start_proxy(target, maxconn)
    res = {}
    try:
        time.sleep(0.2)
        res["rss0_kb"] = mem_kb(proc.pid)[0]
        for count in (1000, ARGS.idle):
            ready = os.path.join(WORK, f"idle-{target}-{count}.json")
            if os.path.exists(ready):
                os.remove(ready)
            holder = spawn([TLOAD, "idle", "--addr", f"127.0.0.1:{TARGETS[target][1]}", "--count", str(count),
                            "--hold-secs", "120", "--ready-file", ready], LOAD_CPU, f"tload-idle-{target}")
            deadline = time.monotonic() + 90
            while not os.path.exists(ready) and holder.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            try:
                with open(ready) as f:
                    summary = json.load(f)
            except (OSError, json.JSONDecodeError):
                summary = {"open": 0, "errors": count}
            rss, hwm = mem_kb(proc.pid)
            res[f"open_{count}"] = summary["open"]
            res[f"rss_{count}_kb"] = rss
            res[f"hwm_{count}_kb"] = hwm
            stop(holder)
            log(f"  idle {target}: {summary['open']}/{count} open, RSS {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f})")
            # Let the proxy see every close before the next step.
            time.sleep(1.0)
        big = ARGS.idle
        if res.get(f"open_{big}") and res.get("open_1000") and res[f"open_{big}"] != res["open_1000"]:
            res["slope_kb_per_conn"] = (res[f"rss_{big}_kb"] - res["rss_1000_kb"]) / (res[f"open_{big}"] - res["open_1000"])
    finally:
        stop(proc)
        wait_closed(TARGETS[target][1])
    return res


# ---------------------------------------------------------------- report


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / 2 / m * 100 if m else None


FIGURES = [
    # key, label, unit, higher is better, format
    ("bulk1.gbps", "bulk throughput, 1 stream", "Gbit/s", True, "{:.2f}"),
    ("bulk4.gbps", "bulk throughput, 4 streams", "Gbit/s", True, "{:.2f}"),
    ("bulk1.cpu_s_per_gb", "proxy CPU per GB, 1 stream", "CPU s/GB", False, "{:.3f}"),
    ("bulk4.cpu_s_per_gb", "proxy CPU per GB, 4 streams", "CPU s/GB", False, "{:.3f}"),
    ("conn.rps", "new connections/s (Connection: close, 64 conc.)", "conn/s", True, "{:.0f}"),
    ("conn.p50_ms", "  latency p50 (connect to close)", "ms", False, "{:.2f}"),
    ("conn.p99_ms", "  latency p99", "ms", False, "{:.2f}"),
    ("conn.cpu_us_per_conn", "proxy CPU per connection", "CPU µs", False, "{:.1f}"),
    # Neither better nor worse (None): a proxy that sleeps less is woken less by CPU 1,
    # which leaves CPU 1 (the bottleneck here) more time for the load; see bench/README.md.
    ("conn.sleeps_per_conn", "  proxy sleeps per connection", "sleeps", None, "{:.3f}"),
    ("keepalive.rps", "kept-alive requests/s (64 conns)", "req/s", True, "{:.0f}"),
    ("keepalive.p50_ms", "  latency p50", "ms", False, "{:.3f}"),
    ("keepalive.p99_ms", "  latency p99", "ms", False, "{:.3f}"),
    ("keepalive.cpu_us_per_req", "proxy CPU per kept-alive request", "CPU µs", False, "{:.1f}"),
    ("keepalive.sleeps_per_req", "  proxy sleeps per request", "sleeps", None, "{:.3f}"),
]


def get(rep_result, key):
    test, field = key.split(".")
    r = rep_result.get(test) or {}
    return r.get(field)


def report(results, idles, meta, targets):
    lines = []
    lines.append(f"# Tether benchmark, {meta['date']}")
    lines.append("")
    lines.append(f"- machine: {meta['cpu']}, {meta['ncpu']} CPUs, kernel {meta['kernel']}, {meta['mem']}")
    lines.append(f"- load average: {meta['load_start']} at start, {meta['load_end']} at end")
    lines.append(f"- versions: {meta['tether']} ({meta['git']}); {meta['haproxy']}; {meta['nginx']}; {meta['iperf3']}")
    lines.append(f"- pinning: each proxy on CPU {PROXY_CPU} (`taskset -c {PROXY_CPU}`, one worker/thread: "
                 f"tether `--workers 1`, haproxy `nbthread 1`, nginx `worker_processes 1`); the load client "
                 f"(iperf3 -c, tload) and the backends (iperf3 -s, nginx serving a 100-byte file) on CPU {LOAD_CPU}.")
    lines.append(f"- {meta['reps']} repetitions of {meta['secs']} s per test; each repetition runs every test "
                 f"for every target in turn, order rotating. Cells: median ±half the min-max range (% of median). "
                 f"Ratios: Tether / peer, median of the per-repetition ratios (for CPU, latency and memory "
                 f"lower is better).")
    lines.append("- no per-connection logging on any proxy (tether `RUST_LOG=warn`, haproxy without `log`, "
                 "nginx stream without `access_log`).")
    if "floor" in targets:
        lines.append("- floor: `tfloor` (bench/loadgen/src/bin/tfloor.rs), a bare epoll relay with only the "
                     "system calls relaying needs and no timeouts, limits, metrics or logs: the least any proxy "
                     "with the same behaviour on the wire costs. `tether/floor` is what Tether has left to win.")
    if ARGS.describe:
        lines.append(f"- binaries: {ARGS.describe}")
    if meta.get("tether_args"):
        lines.append(f"- tether extra arguments: `{meta['tether_args']}`")
    lines.append("")
    head = ["figure", "unit"] + targets + [f"tether/{p}" for p in PEERS if p in targets and "tether" in targets]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key, label, unit, higher, fmt in FIGURES:
        if key.endswith(("cpu_s_per_gb", "cpu_us_per_conn", "cpu_us_per_req", "sleeps_per_conn", "sleeps_per_req")):
            cols_targets = [t for t in targets if t != "direct"]
        else:
            cols_targets = targets
        row = [label, unit]
        for t in targets:
            xs = [get(rep[t], key) for rep in results if t in rep]
            m = med(xs)
            if t not in cols_targets or m is None:
                row.append("-")
                continue
            s = spread(xs)
            row.append(fmt.format(m) + (f" ±{s:.0f}%" if s is not None else ""))
        if "tether" in targets:
            for p in PEERS:
                if p not in targets:
                    continue
                ratios = []
                for rep in results:
                    a, b = get(rep.get("tether", {}), key), get(rep.get(p, {}), key)
                    if a is not None and b:
                        ratios.append(a / b)
                r = med(ratios)
                if r is None:
                    row.append("-")
                else:
                    good = higher is None or ((r >= 1.0) if higher else (r <= 1.0))
                    row.append(f"{r:.2f}" + ("" if good else " ✗"))
        lines.append("| " + " | ".join(row) + " |")
    # memory
    if idles:
        big = ARGS.idle
        mem_rows = [
            ("rss0_kb", "RSS at start", "MiB", 1 / 1024, "{:.1f}"),
            ("rss_1000_kb", "RSS with 1,000 idle connections", "MiB", 1 / 1024, "{:.1f}"),
            (f"rss_{big}_kb", f"RSS with {big:,} idle connections", "MiB", 1 / 1024, "{:.1f}"),
            (f"hwm_{big}_kb", f"peak RSS (VmHWM) with {big:,}", "MiB", 1 / 1024, "{:.1f}"),
            ("slope_kb_per_conn", f"RSS per idle connection (1,000 to {big:,})", "KiB", 1, "{:.2f}"),
        ]
        for key, label, unit, scale, fmt in mem_rows:
            row = [label, unit]
            for t in targets:
                v = idles.get(t, {}).get(key)
                row.append("-" if v is None else fmt.format(v * scale))
            if "tether" in targets:
                for p in PEERS:
                    if p not in targets:
                        continue
                    a, b = idles.get("tether", {}).get(key), idles.get(p, {}).get(key)
                    if a is None or not b:
                        row.append("-")
                    else:
                        r = a / b
                        row.append(f"{r:.2f}" + ("" if r <= 1.0 else " ✗"))
            lines.append("| " + " | ".join(row) + " |")
        opened = {t: idles[t].get(f"open_{big}") for t in idles}
        lines.append("")
        lines.append(f"Idle connections held open (of {big:,}): " + ", ".join(f"{t} {n}" for t, n in opened.items())
                     + f". Each proxy used a fresh process; the open-file limit is {meta['nofile']:,} "
                     f"(two descriptors per proxied connection), which caps the idle test.")
    # scaling: the same figures with two workers against one, per proxy
    pairs = [(two, one) for two, one in SCALING if two in targets and one in targets]
    if pairs:
        lines.append("")
        lines.append("Scaling, two workers on both CPUs against one worker on CPU " + PROXY_CPU
                     + " (tether `--workers 2`, haproxy `nbthread 2`; the second worker shares CPU "
                     + LOAD_CPU + " with the load and the backends). Ratios, median of the per-repetition "
                     "ratios; throughput near 2.0 and CPU per connection near 1.0 mean linear scaling.")
        ceiling = [get(rep.get("tether", {}), "conn.rps") / get(rep.get("direct", {}), "conn.rps")
                   for rep in results
                   if get(rep.get("tether", {}), "conn.rps") and get(rep.get("direct", {}), "conn.rps")]
        if ceiling:
            lines.append(f"One tether worker already reaches {med(ceiling):.2f} of direct's new connections/s "
                         "(no proxy at all): when that is near 1.0 the load client and the backends on CPU "
                         f"{LOAD_CPU} are the limit, a second worker cannot add throughput here, and CPU per "
                         "connection (flat means no cost of sharing) is the figure that says how it scales.")
        lines.append("")
        head = ["figure"] + [f"{two} / {one}" for two, one in pairs]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for key, label, unit, higher, fmt in FIGURES:
            row = [label.strip()]
            for two, one in pairs:
                ratios = []
                for rep in results:
                    a, b = get(rep.get(two, {}), key), get(rep.get(one, {}), key)
                    if a is not None and b:
                        ratios.append(a / b)
                r = med(ratios)
                row.append("-" if r is None else f"{r:.2f}")
            if any(c != "-" for c in row[1:]):
                lines.append("| " + " | ".join(row) + " |")
    errs = []
    for i, rep in enumerate(results):
        for t, r in rep.items():
            for test, v in r.items():
                if isinstance(v, dict) and (v.get("error") or v.get("errors")):
                    errs.append(f"rep {i + 1} {t} {test}: {v.get('error') or str(v.get('errors')) + ' failed requests'}")
    if errs:
        lines.append("")
        lines.append("Errors during the run:")
        lines += [f"- {e}" for e in errs[:40]]
    lines.append("")
    lines.append("✗ marks a ratio where Tether is behind that peer.")
    return "\n".join(lines) + "\n"


def cmd_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return f"{argv[0]}: unknown"


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) // 1024} MiB RAM"
    except (OSError, ValueError):
        pass
    return cpu, mem


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- main


def main():
    global ARGS, WORK, TETHER
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (under 2 minutes): 2 repetitions of 1 s, 2,000 idle")
    ap.add_argument("--reps", type=int, help="repetitions (default 5: short and many beats long and few on a busy machine)")
    ap.add_argument("--secs", type=float, help="seconds per test (default 2)")
    ap.add_argument("--idle", type=int, help="idle connections for the memory test (default: 10,000 or what the open-file limit allows)")
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                    help="comma-separated, from " + ",".join(TARGETS) + " (default: all but tether-copy and tether-old)")
    ap.add_argument("--tests", default="bulk1,bulk4,conn,keepalive,idle", help="comma-separated subset")
    ap.add_argument("--tether-args", default="", help="extra arguments for `tether lb`")
    ap.add_argument("--tether-bin", default=TETHER, help="the tether binary (default target/release/tether)")
    ap.add_argument("--describe", default="", help="what the measured binaries are (printed in the result), e.g. the commits they were built from")
    ap.add_argument("--old-bin", help="a second tether binary, measured as target tether-old")
    ap.add_argument("--out", help="result file (default bench/results/<date>.md)")
    ARGS = ap.parse_args()
    TETHER = ARGS.tether_bin
    ARGS.reps = ARGS.reps or (2 if ARGS.quick else 5)
    ARGS.secs = ARGS.secs or (1.0 if ARGS.quick else 2.0)
    if ARGS.secs != int(ARGS.secs):
        ARGS.secs = max(1, round(ARGS.secs))  # iperf3 takes whole seconds
    ARGS.secs = int(ARGS.secs)
    targets = [t for t in ARGS.targets.split(",") if t]
    if "tether-old" in targets and not ARGS.old_bin:
        raise SystemExit("target tether-old needs --old-bin PATH")
    for t in targets:
        if t not in TARGETS:
            raise SystemExit(f"unknown target {t!r}; known: {', '.join(TARGETS)}")
    tests = [t for t in ARGS.tests.split(",") if t]

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = hard if hard != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    # Each proxied connection costs the proxy two descriptors; keep a margin for listeners
    # and for HAProxy's splice pipes (maxpipes below).
    maxconn = min(30000, (nofile - 600) // 2)
    if ARGS.idle is None:
        ARGS.idle = 2000 if ARGS.quick else min(10000, maxconn - 16)
    ARGS.idle = min(ARGS.idle, maxconn - 16)

    for exe, what in ((TETHER, "cargo build --release -p tether"),
                      (TLOAD, "cargo build --release --manifest-path bench/loadgen/Cargo.toml"),
                      (TFLOOR, "cargo build --release --manifest-path bench/loadgen/Cargo.toml")):
        if exe == TETHER and not any(t.startswith("tether") for t in targets):
            continue
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"{exe} is missing: run bench/run.sh (or {what})")
    for tool in ("taskset", "iperf3", "haproxy", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: run bench/run.sh (it installs the peers)")
    if os.cpu_count() < 2:
        raise SystemExit("needs at least 2 CPUs (proxy on one, load on another)")

    WORK = tempfile.mkdtemp(prefix="tbench-")
    cpu, mem = machine()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "mem": mem, "ncpu": os.cpu_count(), "kernel": platform.release(),
        "load_start": loadavg(),
        "tether": cmd_out([TETHER, "--version"]),
        "git": cmd_out(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
        "haproxy": cmd_out(["haproxy", "-v"]),
        "nginx": cmd_out(["nginx", "-v"]),
        "iperf3": cmd_out(["iperf3", "-v"]),
        "reps": ARGS.reps, "secs": ARGS.secs, "nofile": nofile, "tether_args": ARGS.tether_args,
    }
    log(f"work dir {WORK}; proxies on CPU {PROXY_CPU}, load and backends on CPU {LOAD_CPU}; load average {meta['load_start']}")

    results, idles = [], {}
    procs = {}
    try:
        start_backends(nofile)
        for t in targets:
            if t != "direct":
                procs[t] = start_proxy(t, maxconn)
        measure = [t for t in tests if t != "idle"]
        for rep in range(ARGS.reps):
            order = targets[rep % len(targets):] + targets[: rep % len(targets)]
            rep_res = {t: {} for t in targets}
            for test in measure:
                for t in order:
                    proc = procs.get(t)
                    if test == "bulk1":
                        r = bulk(t, proc, 1)
                    elif test == "bulk4":
                        r = bulk(t, proc, 4)
                    elif test in ("conn", "keepalive"):
                        r = http(t, proc, test)
                    else:
                        raise SystemExit(f"unknown test {test!r}")
                    rep_res[t][test] = r
                    brief = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
                    log(f"rep {rep + 1}/{ARGS.reps} {test:9} {t:15} {brief}")
            results.append(rep_res)
        for t in list(procs):
            stop(procs.pop(t))
            wait_closed(TARGETS[t][1])
        if "idle" in tests:
            for t in targets:
                # The two-worker targets are for the scaling table; memory is per process.
                if t != "direct" and not t.endswith("-w2"):
                    idles[t] = idle(t, maxconn)
    finally:
        stop_all()
    meta["load_end"] = loadavg()
    text = report(results, idles, meta, targets)
    out = ARGS.out or os.path.join(HERE, "results", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M") + (
        "-quick" if ARGS.quick else "") + ".md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    with open(out[:-3] + ".json", "w") as f:
        json.dump({"meta": meta, "results": results, "idle": idles}, f, indent=1)
    shutil.rmtree(WORK, ignore_errors=True)
    print(text)
    log(f"wrote {out}")


if __name__ == "__main__":
    def on_signal(signum, frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    main()
