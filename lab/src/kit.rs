//! What the test suites share besides labs: free ports, a thread echo server, and reading
//! Prometheus text. The root tests, the lb's and vrrp's tests and the gateway's loopback
//! harness all take these from here, so a fix to one is a fix to all.

use std::io::{Read, Write};

/// A port free on `ip` a moment ago (bound, then released): for a daemon's configuration
/// file when the daemon must be told its port before it starts.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

/// An echo server on 127.0.0.1 in threads of this test process; its port. It lives as long
/// as the test binary.
pub fn spawn_echo() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("echo bind");
    let port = l.local_addr().expect("echo addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// The value of the sample whose series is exactly `series` (a name, or a name with its
/// labels as Prometheus writes them: `name{a="x",b="y"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.starts_with(' ').then(|| rest.trim().parse().ok())?
    })
}

/// The sum of every sample in `text` whose line starts with `prefix` (a metric name, or a
/// name and the start of its labels).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of every sample of metric `name` that carries each of `labels` (in any order,
/// among others).
pub fn metric_with(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            let ok = n == name
                && labels.iter().all(|(k, v)| {
                    rest.split(',')
                        .any(|p| p.trim_end_matches('}') == format!("{k}=\"{v}\""))
                });
            ok.then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"3\"} 4\nx_total_other 9\ny 5\n";

    #[test]
    fn series_are_read_exactly_summed_by_prefix_or_matched_by_labels() {
        assert_eq!(metric(TEXT, "y"), Some(5.0));
        assert_eq!(metric(TEXT, "x_total{a=\"1\",b=\"2\"}"), Some(3.0));
        assert_eq!(metric(TEXT, "x_total"), None);
        assert_eq!(metric_sum(TEXT, "x_total{"), 7.0);
        assert_eq!(metric_with(TEXT, "x_total", &[("b", "3")]), 4.0);
        assert_eq!(metric_with(TEXT, "x_total", &[("a", "1")]), 7.0);
        assert_eq!(metric_with(TEXT, "x_total", &[]), 7.0);
        assert_eq!(metric_with(TEXT, "x_total", &[("a", "2")]), 0.0);
    }
}
