//! `tload`: the load client of Tether's benchmark (`bench/run.sh`).
//!
//! One current-thread runtime drives every connection, so the whole client is pinned to one
//! core (`taskset`) and costs the same for every proxy it measures. Each mode prints one JSON
//! object on stdout. Every loop is bounded by a deadline and a count, and every socket
//! operation by a timeout, so a stuck proxy makes errors, not a hang.
//!
//! - `conn`: new connections, one `Connection: close` request each, `--conc` at once;
//!   latency from before `connect` to the server's close (what a client sees).
//! - `keepalive`: `--conns` kept-alive connections, requests back to back on each;
//!   latency from writing the request to the end of the body.
//! - `idle`: opens `--count` connections, one request on each, then holds them open and
//!   writes `--ready-file` (so the harness measures the proxy's memory) until killed or
//!   `--hold-secs` pass.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// One socket operation may take this long before the request counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted (headers plus body).
const MAX_RESPONSE: usize = 1 << 20;

struct Args {
    mode: String,
    opts: HashMap<String, String>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut it = std::env::args().skip(1);
        let mode = it
            .next()
            .ok_or("usage: tload conn|keepalive|idle --addr IP:PORT ...")?;
        let mut opts = HashMap::new();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --option, got {k:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            opts.insert(key.to_string(), v);
        }
        Ok(Args { mode, opts })
    }

    fn get<T: std::str::FromStr>(&self, key: &str, default: Option<T>) -> Result<T, String> {
        match self.opts.get(key) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: cannot parse {v:?}")),
            None => default.ok_or_else(|| format!("--{key} is required")),
        }
    }
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tload: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tload: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tload: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<String, String> {
    let addr: SocketAddr = args.get("addr", None)?;
    let path: String = args.get("path", Some("/".to_string()))?;
    let request = |close: bool| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: tload\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes()
    };
    match args.mode.as_str() {
        "conn" | "keepalive" => {
            let close = args.mode == "conn";
            let conc: usize = args.get("conc", Some(64))?;
            let secs: f64 = args.get("secs", Some(5.0))?;
            let warmup: f64 = args.get("warmup-secs", Some(0.3))?;
            let max: u64 = args.get("max", Some(5_000_000))?;
            let started = Instant::now();
            let measure_from = started + Duration::from_secs_f64(warmup);
            let deadline = measure_from + Duration::from_secs_f64(secs);
            let per_task = max.div_ceil(conc.max(1) as u64);
            let mut tasks = Vec::new();
            for _ in 0..conc.max(1) {
                let req = request(close);
                tasks.push(tokio::spawn(worker(
                    addr,
                    req,
                    close,
                    measure_from,
                    deadline,
                    per_task,
                )));
            }
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut all_ok = 0u64;
            let mut first_error = None;
            for t in tasks {
                let r = t.await.map_err(|e| e.to_string())?;
                lat.extend(r.latencies_us);
                errors += r.errors;
                all_ok += r.all_ok;
                if first_error.is_none() {
                    first_error = r.first_error;
                }
            }
            let elapsed = Instant::now()
                .min(deadline)
                .saturating_duration_since(measure_from)
                .as_secs_f64()
                .max(1e-3);
            lat.sort_unstable();
            Ok(format!(
                "{{\"mode\":\"{}\",\"ok\":{},\"all_ok\":{},\"errors\":{},\"secs\":{:.3},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"first_error\":{}}}",
                args.mode,
                lat.len(),
                all_ok,
                errors,
                elapsed,
                lat.len() as f64 / elapsed,
                pct(&lat, 0.50),
                pct(&lat, 0.99),
                lat.last().copied().unwrap_or(0),
                json_str(first_error.as_deref()),
            ))
        }
        "idle" => {
            let count: usize = args.get("count", None)?;
            let hold: f64 = args.get("hold-secs", Some(60.0))?;
            let ready: String = args.get("ready-file", None)?;
            let par = 128.min(count.max(1));
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut tasks = Vec::new();
            for i in 0..par {
                let n = count / par + usize::from(i < count % par);
                let req = request(false);
                tasks.push(tokio::spawn(async move {
                    let mut held = Vec::with_capacity(n);
                    let mut errors = 0u64;
                    for _ in 0..n {
                        if Instant::now() > deadline {
                            errors += 1;
                            continue;
                        }
                        match open_and_request(addr, &req).await {
                            Ok(s) => held.push(s),
                            Err(_) => errors += 1,
                        }
                    }
                    (held, errors)
                }));
            }
            let mut held = Vec::with_capacity(count);
            let mut errors = 0;
            for t in tasks {
                let (h, e) = t.await.map_err(|e| e.to_string())?;
                held.extend(h);
                errors += e;
            }
            let summary = format!(
                "{{\"mode\":\"idle\",\"open\":{},\"errors\":{}}}",
                held.len(),
                errors
            );
            std::fs::write(&ready, &summary).map_err(|e| format!("{ready}: {e}"))?;
            tokio::time::sleep(Duration::from_secs_f64(hold)).await;
            drop(held);
            Ok(summary)
        }
        other => Err(format!("unknown mode {other:?} (conn, keepalive, idle)")),
    }
}

struct WorkerResult {
    latencies_us: Vec<u32>,
    /// Successful requests including the warm-up (for CPU per request over the whole run).
    all_ok: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(
    addr: SocketAddr,
    req: Vec<u8>,
    close: bool,
    measure_from: Instant,
    deadline: Instant,
    max: u64,
) -> WorkerResult {
    let mut out = WorkerResult {
        latencies_us: Vec::new(),
        all_ok: 0,
        errors: 0,
        first_error: None,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut conn: Option<TcpStream> = None;
    let mut done = 0u64;
    while done < max && Instant::now() < deadline {
        done += 1;
        let t0 = Instant::now();
        let result = if close {
            one_closed(addr, &req, &mut buf).await
        } else {
            one_kept(addr, &mut conn, &req, &mut buf).await
        };
        let t1 = Instant::now();
        if result.is_ok() {
            out.all_ok += 1;
        }
        if t0 < measure_from || t1 > deadline {
            continue;
        }
        match result {
            Ok(()) => out
                .latencies_us
                .push(t1.duration_since(t0).as_micros().min(u32::MAX as u128) as u32),
            Err(e) => {
                out.errors += 1;
                conn = None;
                if out.first_error.is_none() {
                    out.first_error = Some(e.to_string());
                }
            }
        }
    }
    out
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = timeout(OP_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Connect, send, read until the server closes; the response must be a 200.
async fn one_closed(addr: SocketAddr, req: &[u8], buf: &mut [u8]) -> io::Result<()> {
    let mut s = connect(addr).await?;
    s.write_all(req).await?;
    let mut got = 0usize;
    let mut head_ok = false;
    loop {
        let n = timeout(OP_TIMEOUT, s.read(&mut buf[got.min(64)..]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??;
        if n == 0 {
            break;
        }
        if !head_ok && got < 64 {
            // Only the status line matters here; later bytes overwrite the tail of the buffer.
            got += n;
            head_ok = status_ok(&buf[..got.min(buf.len())]);
        } else {
            got += n;
        }
        if got > MAX_RESPONSE {
            return Err(io::Error::other("response too large"));
        }
    }
    if !head_ok {
        return Err(io::Error::other("no HTTP 200 status line"));
    }
    Ok(())
}

/// One request on a kept-alive connection (opened on first use or after an error).
async fn one_kept(
    addr: SocketAddr,
    conn: &mut Option<TcpStream>,
    req: &[u8],
    buf: &mut [u8],
) -> io::Result<()> {
    if conn.is_none() {
        *conn = Some(connect(addr).await?);
    }
    let Some(s) = conn.as_mut() else {
        return Err(io::Error::other("no connection"));
    };
    s.write_all(req).await?;
    read_response(s, buf).await
}

async fn open_and_request(addr: SocketAddr, req: &[u8]) -> io::Result<TcpStream> {
    let mut s = connect(addr).await?;
    s.write_all(req).await?;
    let mut buf = vec![0u8; 16 * 1024];
    read_response(&mut s, &mut buf).await?;
    Ok(s)
}

/// Reads one response with a `Content-Length` body.
async fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0usize;
    loop {
        if got == buf.len() {
            return Err(io::Error::other("response headers too large"));
        }
        let n = timeout(OP_TIMEOUT, s.read(&mut buf[got..]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed mid-response",
            ));
        }
        got += n;
        let Some(end) = find(&buf[..got], b"\r\n\r\n") else {
            continue;
        };
        let head = &buf[..end];
        if !status_ok(head) {
            return Err(io::Error::other("status is not 200"));
        }
        let len = content_length(head)
            .ok_or_else(|| io::Error::other("no Content-Length in response"))?;
        let mut remaining = (end + 4 + len).saturating_sub(got);
        while remaining > 0 {
            let want = remaining.min(buf.len());
            let n = timeout(OP_TIMEOUT, s.read(&mut buf[..want]))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed mid-body",
                ));
            }
            remaining -= n;
        }
        return Ok(());
    }
}

fn status_ok(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim().eq_ignore_ascii_case("content-length") {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn pct(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn json_str(s: Option<&str>) -> String {
    match s {
        None => "null".to_string(),
        Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
    }
}
