#!/usr/bin/env python3
"""Tether against HAProxy where users really run them: one small host shared by the
clients, the servers and the balancer, nothing pinned, both balancers at their defaults.

Started by `bench/run.sh --unpinned`, which installs the peers. Everything runs on
loopback. The balancers are `tether lb` (its default worker count: one per CPU) and
HAProxy `mode tcp` (its default nbthread: one per CPU), both without per-connection logs,
each relaying to the same servers:

- nginx (`worker_processes auto`) serving a 100-byte file: wrk -t2 -c64 with kept-alive
  connections (`keepalive`), and with `Connection: close` on every request (`close`);
- PostgreSQL, a throwaway cluster in a temporary directory owned by the postgres user:
  pgbench -c16 -j2, select-only by default (`pgbench`).

Each repetition runs every workload through tether and then HAProxy, so runs alternate
(tether, haproxy, tether, haproxy, ...). Besides each client's rate and latency, every run
records the balancer's CPU seconds and context switches (voluntary and involuntary, every
thread summed, from /proc) before and after, divided by the requests made: the figures
that say where a balancer loses when it competes for the CPUs with its clients.

Only processes this script started are stopped, by pid, at the end, on error and on
SIGINT/SIGTERM; the PostgreSQL cluster is removed then too. Every load is bounded (wrk -d,
pgbench -T, and a timeout on each).
"""

import argparse
import datetime
import glob
import json
import os
import platform
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench as b  # noqa: E402  (shared helpers: processes, /proc readers, medians)

# Loopback ports below the ephemeral range, apart from the pinned mode's (21101-21192).
NGINX_PORT = 21201
PG_PORT = 21202
BALANCERS = {
    # name: (port relaying to nginx, port relaying to PostgreSQL)
    "tether": (21211, 21212),
    "haproxy": (21221, 21222),
}
# `--with-log`: tether as it runs by default, a line per connection to stderr (a file
# here, as journald's pipe would take it), beside the quiet one; its column says what the
# connection log costs.
LOGGED = ("tether-log", (21231, 21232))
# `--old-bin`: another tether build (the commit before a change), quiet like `tether`; its
# column and the ratio tether/tether-old say what the change did, measured in the same run.
OLD = ("tether-old", (21241, 21242))
WORKLOADS = ["keepalive", "close", "pgbench"]
WORKLOAD_LABEL = {
    "keepalive": "wrk keep-alive (-t2 -c64) to nginx",
    "close": "wrk `Connection: close` (-t2 -c64) to nginx",
    "pgbench": "pgbench -c16 -j2 to PostgreSQL",
}
PG_USER = "postgres"

ARGS = None
PGDIR = None  # the temporary PostgreSQL cluster, removed at exit


# ---------------------------------------------------------------- servers


def pg_bindir():
    """The newest PostgreSQL's binaries (Debian: /usr/lib/postgresql/<major>/bin; the
    wrappers in /usr/bin want a cluster registered with postgresql-common)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/postgres")
    if found:
        found.sort(key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
        return os.path.dirname(found[-1])
    exe = shutil.which("postgres")
    return os.path.dirname(os.path.realpath(exe)) if exe else None


def start_nginx():
    www = os.path.join(b.WORK, "www")
    os.makedirs(www, exist_ok=True)
    os.makedirs(os.path.join(b.WORK, "tmp"), exist_ok=True)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("x" * 99 + "\n")
    # Debian's nginx.conf but for the paths and the access log (the server's log is not what
    # is measured; it would cost the same through either balancer). Its workers run as
    # nobody and must read the file.
    os.chmod(b.WORK, 0o755)
    conf = b.write(
        "nginx.conf",
        f"""
daemon off;
worker_processes auto;
pid {b.WORK}/nginx.pid;
error_log {b.WORK}/nginx.error.log warn;
events {{ worker_connections 768; }}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {b.WORK}/tmp; proxy_temp_path {b.WORK}/tmp; fastcgi_temp_path {b.WORK}/tmp;
    uwsgi_temp_path {b.WORK}/tmp; scgi_temp_path {b.WORK}/tmp;
    server {{
        listen 127.0.0.1:{NGINX_PORT};
        root {www};
        location / {{ }}
    }}
}}
""",
    )
    p = b.spawn(["nginx", "-p", b.WORK, "-c", conf, "-e", f"{b.WORK}/nginx.error.log"], None, "nginx")
    b.wait_listening(p, [NGINX_PORT], "nginx")
    return p


def as_pg_user():
    """Keyword arguments that run a PostgreSQL program as the postgres user when this is
    root (PostgreSQL refuses to run as root), else as this user."""
    if os.geteuid() != 0:
        return {}
    return {"user": PG_USER, "group": pwd.getpwnam(PG_USER).pw_gid, "extra_groups": []}


def start_postgres(bindir):
    """A fresh cluster in PGDIR on 127.0.0.1:PG_PORT, filled by `pgbench -i`."""
    global PGDIR
    PGDIR = tempfile.mkdtemp(prefix="tbench-pg-")
    data = os.path.join(PGDIR, "data")
    kw = as_pg_user()
    if kw:
        ent = pwd.getpwnam(PG_USER)
        os.chown(PGDIR, ent.pw_uid, ent.pw_gid)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": PGDIR}
    r = subprocess.run([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8", "--locale=C"],
                       cwd=PGDIR, env=env, capture_output=True, text=True, timeout=180, **kw)
    if r.returncode != 0:
        raise SystemExit(f"initdb failed: {(r.stderr or r.stdout).strip()[-500:]}")
    # A throwaway cluster: no fsync, so that neither the disk nor the WAL decides the
    # figures (select-only writes nothing anyway; this matters for --pg-mode tpcb).
    argv = [os.path.join(bindir, "postgres"), "-D", data, "-p", str(PG_PORT), "-k", PGDIR,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "logging_collector=off"]
    user = kw.get("user")
    p = b.spawn(argv, None, "postgres", env=env, user=user, cwd=PGDIR)
    p.bench_stop_signal = signal.SIGINT  # fast shutdown: clients are cut, not waited for
    b.wait_listening(p, [PG_PORT], "postgres", timeout=60)
    # Listening is not accepting queries yet: pg_isready waits (bounded) for that.
    r = subprocess.run([os.path.join(bindir, "pg_isready"), "-h", "127.0.0.1", "-p", str(PG_PORT),
                        "-U", "postgres", "-t", "60"], capture_output=True, text=True, timeout=70)
    if r.returncode != 0:
        raise SystemExit(f"postgres is not ready: {r.stdout.strip()}; see {b.WORK}/postgres.stderr")
    b.log(f"pgbench -i -s {ARGS.pg_scale}")
    r = subprocess.run([os.path.join(bindir, "pgbench"), "-i", "-q", "-s", str(ARGS.pg_scale),
                        "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "postgres"],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"pgbench -i failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return p


# ---------------------------------------------------------------- balancers


def balancer_conf(name):
    http, pg = BALANCERS[name]
    if name.startswith("tether"):
        # Tether's defaults but for the health check: HAProxy checks a server only when told
        # to (`check`), so neither checks here.
        return b.write(f"{name}.toml", f"""
[[frontend]]
name = "http"
bind = ["127.0.0.1:{http}"]
backend = "web"

[[frontend]]
name = "pg"
bind = ["127.0.0.1:{pg}"]
backend = "pg"

[[backend]]
name = "web"
[backend.health]
kind = "none"
[[backend.server]]
name = "s1"
address = "127.0.0.1:{NGINX_PORT}"

[[backend]]
name = "pg"
[backend.health]
kind = "none"
[[backend.server]]
name = "s1"
address = "127.0.0.1:{PG_PORT}"
""")
    # HAProxy's defaults (nbthread: one per CPU; maxconn: from the open-file limit; no log
    # line unless `log` is set) but for the timeouts, which it has none of: Tether's.
    return b.write("haproxy.cfg", f"""
global

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s

frontend http
    bind 127.0.0.1:{http}
    default_backend web

frontend pg
    bind 127.0.0.1:{pg}
    default_backend pg

backend web
    server s1 127.0.0.1:{NGINX_PORT}

backend pg
    server s1 127.0.0.1:{PG_PORT}
""")


def start_balancer(name):
    conf = balancer_conf(name)
    if name in ("tether", OLD[0]):
        # No `--workers`: its default, one per CPU. warn: no line per connection.
        exe = ARGS.old_bin if name == OLD[0] else ARGS.tether_bin
        p = b.spawn([exe, "lb", "--config", conf], None, name,
                    env=dict(os.environ, RUST_LOG="warn"))
    elif name == LOGGED[0]:
        # Its default filter: a line per connection, to WORK/tether-log.stderr.
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        p = b.spawn([ARGS.tether_bin, "lb", "--config", conf], None, name, env=env)
    else:
        p = b.spawn(["haproxy", "-db", "-f", conf], None, name)
    b.wait_listening(p, list(BALANCERS[name]), name)
    return p


# ---------------------------------------------------------------- clients


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return None
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(out):
    """wrk's summary (with --latency): requests, rate, p50/p99, socket errors, non-2xx."""
    n = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not n or not rate:
        return None
    res = {"requests": int(n.group(1)), "rate": float(rate.group(1))}
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[key] = to_ms(m.group(1))
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = sum(int(x) for x in errs.groups()) if errs else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] += int(non2xx.group(1)) if non2xx else 0
    return res


def parse_pgbench(out):
    n = re.search(r"number of transactions actually processed: (\d+)", out)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not n or not tps:
        return None
    res = {"requests": int(n.group(1)), "rate": float(tps.group(1))}
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    if lat:
        res["avg_ms"] = float(lat.group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    res["errors"] = int(failed.group(1)) if failed else 0
    return res


def client(workload, name, secs, bindir):
    http, pg = BALANCERS[name]
    if workload in ("keepalive", "close"):
        argv = ["wrk", "-t2", "-c64", f"-d{secs}s", "--latency"]
        if workload == "close":
            argv += ["-H", "Connection: close"]
        argv.append(f"http://127.0.0.1:{http}/index.html")
        parse = parse_wrk
    else:
        argv = [os.path.join(bindir, "pgbench"), "-h", "127.0.0.1", "-p", str(pg), "-U", "postgres",
                "-c16", "-j2", "-T", str(secs), "-n"]
        if ARGS.pg_mode == "select":
            argv.append("-S")
        argv.append("postgres")
        parse = parse_pgbench
    # Not pinned, like everything else here. subprocess.run kills the client if this script
    # is interrupted while it waits.
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    res = parse(r.stdout)
    if res is None:
        return {"error": f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"}
    return res


def machine_cpu():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already in user
    return total - idle, total


def run_one(workload, name, proc, secs, bindir):
    pid = proc.pid
    c0, (v0, i0), (mb0, mt0), t0 = b.cpu_seconds(pid), b.ctxt_switches(pid), machine_cpu(), time.monotonic()
    res = client(workload, name, secs, bindir)
    c1, (v1, i1), (mb1, mt1), t1 = b.cpu_seconds(pid), b.ctxt_switches(pid), machine_cpu(), time.monotonic()
    res.update({"cpu_s": c1 - c0, "vcsw_before": v0, "vcsw_after": v1, "ivcsw_before": i0, "ivcsw_after": i1,
                "wall_s": t1 - t0})
    res["balancer_cores"] = (c1 - c0) / (t1 - t0)
    res["machine_busy_pct"] = 100 * (mb1 - mb0) / (mt1 - mt0) if mt1 > mt0 else None
    if res.get("requests"):
        # The windows cover the whole client run, connection set-up included.
        n = res["requests"]
        res["cpu_s_per_req"] = (c1 - c0) / n
        res["cpu_us_per_req"] = (c1 - c0) * 1e6 / n
        res["vcsw_per_req"] = (v1 - v0) / n
        res["ivcsw_per_req"] = (i1 - i0) / n
    return res


# ---------------------------------------------------------------- report

FIGURES = [
    # key, label, unit, higher is better (None: neither), format, workloads
    ("rate", "requests/s", "req/s", True, "{:.0f}", ("keepalive", "close")),
    ("rate", "transactions/s", "tps", True, "{:.0f}", ("pgbench",)),
    ("p50_ms", "latency p50", "ms", False, "{:.3f}", ("keepalive", "close")),
    ("p99_ms", "latency p99", "ms", False, "{:.3f}", ("keepalive", "close")),
    ("avg_ms", "latency average", "ms", False, "{:.3f}", ("pgbench",)),
    ("cpu_us_per_req", "balancer CPU per request", "CPU µs", False, "{:.1f}", WORKLOADS),
    ("vcsw_per_req", "balancer voluntary context switches per request", "switches", None, "{:.3f}", WORKLOADS),
    ("ivcsw_per_req", "balancer involuntary context switches per request", "switches", None, "{:.4f}", WORKLOADS),
    ("balancer_cores", "balancer CPU used", "cores", None, "{:.2f}", WORKLOADS),
    ("machine_busy_pct", "whole machine busy", "%", None, "{:.0f}", WORKLOADS),
]


def paired_ratio(samples, workload, key, num, den):
    """The median over the repetitions of `num`'s figure over `den`'s in the same
    repetition: runs of one repetition follow each other within seconds, so the drift of a
    shared host over minutes (±10-15 % on the 2-CPU VMs this was written on) cancels out."""
    by_rep = {}
    for s in samples:
        if s["workload"] == workload and s["balancer"] in (num, den):
            by_rep.setdefault(s["rep"], {})[s["balancer"]] = s["result"].get(key)
    ratios = [v[num] / v[den] for v in by_rep.values() if v.get(num) is not None and v.get(den)]
    return b.med(ratios)


def report(samples, meta):
    lines = [f"# Tether against HAProxy on a shared host, unpinned, {meta['date']}", ""]
    lines.append(f"- machine: {meta['cpu']}, {meta['ncpu']} CPUs, kernel {meta['kernel']}, {meta['mem']}")
    lines.append(f"- load average: {meta['load_start']} at start, {meta['load_end']} at end")
    lines.append(f"- versions: {meta['tether']} ({meta['git']}); {meta['haproxy']}; {meta['nginx']}; "
                 f"{meta['postgres']}; {meta['pgbench']}; {meta['wrk']}")
    lines.append("- nothing pinned: the clients (wrk, pgbench), the servers (nginx, PostgreSQL) and the balancer "
                 "share every CPU.")
    lines.append(f"- balancers at their defaults: tether without `--workers` ({meta['threads']['tether']} threads "
                 f"seen), HAProxy without `nbthread` ({meta['threads']['haproxy']} threads seen; `haproxy -vv`: "
                 f"default={meta['haproxy_default_threads']}); neither logs a line per connection (tether "
                 f"`RUST_LOG=warn`, HAProxy without `log`); no health checks; timeouts 2s/60s/60s on both. "
                 f"Open-file limit {meta['nofile']}.")
    lines.append(f"- servers: nginx `worker_processes auto` ({meta['nginx_workers']} workers) serving a 100-byte "
                 f"file, access log off; PostgreSQL with fsync off, pgbench scale {meta['pg_scale']}, "
                 f"{'select-only (`-S`)' if meta['pg_mode'] == 'select' else 'TPC-B-like (default)'}.")
    lines.append(f"- {meta['reps']} repetition{'s' if meta['reps'] != 1 else ''} of {meta['secs']} s per run (after {meta['warmup']} s of warm-up "
                 f"per workload and balancer); runs alternate, the first rotating. Cells: median ±half the "
                 f"min-max range (% of median). Ratio: the median of the per-repetition ratios tether / haproxy.")
    if meta.get("describe"):
        lines.append(f"- binaries: {meta['describe']}")
    lines.append("")
    # Extra columns: (balancer, numerator, denominator) of the ratio beside it.
    extra = [(n, num, den) for n, num, den in ((OLD[0], "tether", OLD[0]), (LOGGED[0], LOGGED[0], "tether"))
             if n in BALANCERS]
    lines.append("| workload | figure | unit | tether | haproxy | tether/haproxy |"
                 + "".join(f" {n} | {num}/{den} |" for n, num, den in extra))
    lines.append("|---|---|---|---|---|---|" + "---|---|" * len(extra))
    for w in meta["workloads"]:
        first = True
        for key, label, unit, higher, fmt, applies in FIGURES:
            if w not in applies:
                continue
            meds = {}
            row = [WORKLOAD_LABEL[w] if first else "", label, unit]
            for name in ["tether", "haproxy"]:
                xs = [s["result"].get(key) for s in samples if s["workload"] == w and s["balancer"] == name]
                meds[name] = b.med(xs)
                if meds[name] is None:
                    row.append("-")
                    continue
                sp = b.spread(xs)
                row.append(fmt.format(meds[name]) + (f" ±{sp:.0f}%" if sp is not None else ""))
            r = paired_ratio(samples, w, key, "tether", "haproxy")
            if r is None:
                row.append("-")
            else:
                good = higher is None or ((r >= 1.0) if higher else (r <= 1.0))
                row.append(f"{r:.2f}" + ("" if good else " ✗"))
            for n, num, den in extra:
                xs = [s["result"].get(key) for s in samples if s["workload"] == w and s["balancer"] == n]
                m = b.med(xs)
                sp = b.spread(xs)
                row.append("-" if m is None else fmt.format(m) + (f" ±{sp:.0f}%" if sp is not None else ""))
                r = paired_ratio(samples, w, key, num, den)
                row.append("-" if r is None else f"{r:.2f}")
            lines.append("| " + " | ".join(row) + " |")
            first = False
    errs = []
    for s in samples:
        r = s["result"]
        if r.get("error") or r.get("errors"):
            errs.append(f"rep {s['rep']} {s['workload']} {s['balancer']}: "
                        + (r.get("error") or f"{r['errors']} failed requests"))
    if errs:
        lines += ["", "Errors during the run:"] + [f"- {e}" for e in errs[:40]]
    lines += ["", "✗ marks a ratio where Tether is behind HAProxy. Context switches and cores used are neither "
              "better nor worse by themselves; see bench/README.md (unpinned mode)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def haproxy_default_threads():
    try:
        r = subprocess.run(["haproxy", "-vv"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"MAX_THREADS=\d+, default=(\d+)", r.stdout + r.stderr)
    return int(m.group(1)) if m else None


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run: 2 repetitions of 3 s")
    ap.add_argument("--reps", type=int, help="repetitions (default 8)")
    ap.add_argument("--secs", type=int, help="seconds per run (default 5)")
    ap.add_argument("--warmup", type=int, help="seconds of unrecorded load per workload and balancer before "
                    "the first repetition (default 2, 1 with --quick, 0 for none)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of " + ",".join(WORKLOADS))
    ap.add_argument("--pg-mode", choices=["select", "tpcb"], default="select",
                    help="pgbench select-only (default: one SELECT by primary key per transaction, from memory) "
                         "or its default TPC-B-like transaction (7 statements, writes)")
    ap.add_argument("--pg-scale", type=int, default=1, help="pgbench scale (default 1: 100,000 accounts, about 20 MB)")
    ap.add_argument("--tether-bin", default=os.environ.get("TETHER_BIN") or b.TETHER,
                    help="the tether binary (default $TETHER_BIN, else target/release/tether)")
    ap.add_argument("--with-log", action="store_true",
                    help="also run tether with its default connection log (a third balancer, tether-log)")
    ap.add_argument("--old-bin", help="another tether build, measured as tether-old beside tether (before/after)")
    ap.add_argument("--describe", default="", help="what the measured binaries are (printed in the result)")
    ap.add_argument("--out", help="result file (default bench/results/<date>-unpinned.md)")
    ARGS = ap.parse_args()
    b.ARGS = ARGS
    # Many short repetitions rather than a few long ones: each gives a ratio of its own.
    ARGS.reps = ARGS.reps or (2 if ARGS.quick else 8)
    ARGS.secs = ARGS.secs or (3 if ARGS.quick else 5)
    if ARGS.warmup is None:
        ARGS.warmup = 1 if ARGS.quick else 2
    workloads = [w for w in ARGS.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")

    bindir = pg_bindir() if "pgbench" in workloads else None
    if not os.access(ARGS.tether_bin, os.X_OK):
        raise SystemExit(f"{ARGS.tether_bin} is missing: run bench/run.sh --unpinned (or cargo build --release -p tether)")
    for tool in ("wrk", "haproxy", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: run bench/run.sh --unpinned (it installs the peers)")
    if "pgbench" in workloads:
        for exe in ("postgres", "initdb", "pg_isready", "pgbench"):
            if not bindir or not os.access(os.path.join(bindir, exe), os.X_OK):
                raise SystemExit(f"PostgreSQL's {exe} is missing: run bench/run.sh --unpinned (Debian: postgresql)")
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                raise SystemExit(f"no user {PG_USER!r} to run PostgreSQL as (Debian's postgresql package makes it)")

    import resource
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    b.WORK = tempfile.mkdtemp(prefix="tbench-unpinned-")
    cpu, mem = b.machine()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "unpinned", "cpu": cpu, "mem": mem, "ncpu": os.cpu_count(), "kernel": platform.release(),
        "load_start": b.loadavg(),
        "tether": b.cmd_out([ARGS.tether_bin, "--version"]),
        "git": b.cmd_out(["git", "-C", b.ROOT, "describe", "--always", "--dirty"]),
        "haproxy": b.cmd_out(["haproxy", "-v"]),
        "haproxy_default_threads": haproxy_default_threads(),
        "nginx": b.cmd_out(["nginx", "-v"]),
        "wrk": b.cmd_out(["wrk", "-v"]).split(" Copyright")[0],
        "postgres": b.cmd_out([os.path.join(bindir, "postgres"), "--version"]) if bindir else "-",
        "pgbench": b.cmd_out([os.path.join(bindir, "pgbench"), "--version"]) if bindir else "-",
        "reps": ARGS.reps, "secs": ARGS.secs, "warmup": ARGS.warmup, "workloads": workloads,
        "pg_mode": ARGS.pg_mode, "pg_scale": ARGS.pg_scale, "nofile": nofile, "describe": ARGS.describe,
    }
    b.log(f"work dir {b.WORK}; nothing pinned; load average {meta['load_start']} on {os.cpu_count()} CPUs")

    samples = []
    try:
        nginx = start_nginx()
        if "pgbench" in workloads:
            start_postgres(bindir)
        if ARGS.old_bin:
            BALANCERS[OLD[0]] = OLD[1]
        if ARGS.with_log:
            BALANCERS[LOGGED[0]] = LOGGED[1]
        procs = {name: start_balancer(name) for name in BALANCERS}
        if ARGS.warmup:
            for w in workloads:
                for name, p in procs.items():
                    run_one(w, name, p, ARGS.warmup, bindir)
        for rep in range(1, ARGS.reps + 1):
            for w in workloads:
                # Runs alternate, and who goes first rotates with the repetition, so that
                # neither balancer always follows the other's load.
                order = list(procs.items())
                k = (rep - 1) % len(order)
                for name, p in order[k:] + order[:k]:
                    r = run_one(w, name, p, ARGS.secs, bindir)
                    samples.append({"rep": rep, "workload": w, "balancer": name, "result": r})
                    brief = ", ".join(f"{k} {r[k]:.3g}" for k in ("rate", "cpu_us_per_req", "vcsw_per_req")
                                      if isinstance(r.get(k), float))
                    b.log(f"rep {rep}/{ARGS.reps} {w:9} {name:8} {brief or r.get('error')}")
        # Counted after the runs: a master listens before its workers or threads exist.
        meta["threads"] = {name: b.thread_count(p.pid) for name, p in procs.items()}
        meta["nginx_workers"] = len(b.tree(nginx.pid)) - 1
        b.log(f"threads: {meta['threads']}; nginx workers: {meta['nginx_workers']}")
    finally:
        b.stop_all()
        if PGDIR:
            shutil.rmtree(PGDIR, ignore_errors=True)
    meta["load_end"] = b.loadavg()
    text = report(samples, meta)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M")
    out = ARGS.out or os.path.join(HERE, "results", f"{stamp}-unpinned{'-quick' if ARGS.quick else ''}.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    with open(out[:-3] + ".json" if out.endswith(".md") else out + ".json", "w") as f:
        json.dump({"meta": meta, "samples": samples}, f, indent=1)
    shutil.rmtree(b.WORK, ignore_errors=True)
    print(text)
    b.log(f"wrote {out}")


if __name__ == "__main__":
    def on_signal(signum, frame):
        # Stop what runs now; main()'s finally removes the PostgreSQL cluster on the way out.
        b.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    main()
