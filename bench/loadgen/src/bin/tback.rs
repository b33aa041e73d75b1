//! `tback`: the server behind the tunnels of `bench/gateway-peers`, for when nginx and
//! iperf3 are not installed (the gateway bench needs neither).
//!
//! - `--http IP:PORT`: answers every request (headers up to the blank line) with a 200 and a
//!   100-byte body; closes after a request with `Connection: close`, keeps the connection
//!   otherwise (the idle test holds it open).
//! - `--sink IP:PORT`: reads until the peer's end of stream, then writes the number of bytes
//!   read as a decimal line and closes, so the client times the whole transfer end to end.
//!
//! One current-thread runtime (pinned to the load CPU by the harness), so it costs the same
//! whatever tunnel it stands behind. Runs until killed.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";

fn main() -> ExitCode {
    let mut http = None;
    let mut sink = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().and_then(|v| v.parse::<SocketAddr>().ok());
        match (k.as_str(), v) {
            ("--http", Some(a)) => http = Some(a),
            ("--sink", Some(a)) => sink = Some(a),
            _ => {
                eprintln!("usage: tback [--http IP:PORT] [--sink IP:PORT]");
                return ExitCode::FAILURE;
            }
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tback: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: std::io::Result<()> = rt.block_on(async {
        let mut tasks = Vec::new();
        if let Some(a) = http {
            let l = TcpListener::bind(a).await?;
            tasks.push(tokio::spawn(accept_loop(l, false)));
        }
        if let Some(a) = sink {
            let l = TcpListener::bind(a).await?;
            tasks.push(tokio::spawn(accept_loop(l, true)));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tback: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn accept_loop(l: TcpListener, sink: bool) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        if sink {
            tokio::spawn(serve_sink(s));
        } else {
            tokio::spawn(serve_http(s));
        }
    }
}

/// Answers requests until the client closes or asks to close.
async fn serve_http(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut got = 0usize;
    loop {
        if got == buf.len() {
            return Ok(()); // headers too large: drop the client
        }
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            return Ok(());
        }
        got += n;
        while let Some(end) = find(&buf[..got], b"\r\n\r\n") {
            let close = find(&buf[..end], b"Connection: close").is_some();
            s.write_all(RESPONSE).await?;
            if close {
                return s.shutdown().await;
            }
            buf.copy_within(end + 4..got, 0);
            got -= end + 4;
        }
    }
}

/// Counts bytes until end of stream, then reports the count.
async fn serve_sink(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    s.write_all(format!("{total}\n").as_bytes()).await?;
    s.shutdown().await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
