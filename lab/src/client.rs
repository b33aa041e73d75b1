//! What a lab client does: an echo exchange that names the server, and a GET to a daemon's
//! admin endpoint inside its host.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::Lab;

/// One echo exchange along a path; returns the banner of the server that answered.
pub fn echo(lab: &Lab, from: &str, to: SocketAddr) -> Result<String, String> {
    let mut s = lab
        .connect(from, to, Duration::from_millis(1000))
        .map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let line = b"tether-demo hello\n";
    s.write_all(line).map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(line.len()).any(|w| w == line) {
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the echo".into());
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > 4096 {
            return Err("no echo in 4 KiB".into());
        }
    }
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// A GET to a daemon's admin endpoint inside its host: (status, body).
pub fn http_get(lab: &Lab, host: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = lab
        .connect(host, addr, Duration::from_millis(300))
        .map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(700)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP answer".to_string())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
