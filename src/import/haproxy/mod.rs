//! haproxy.cfg to lb.toml: `mode tcp` frontends, backends and listens, SNI routes, server
//! options and health checks. Everything else is reported, line by line.

use std::time::Duration;

use super::toml_out::{Table, Val};
use super::{Conversion, ParseError, Warning};

mod addr;
mod assemble;
mod directives;
mod settings;

use assemble::assemble;
use settings::{Common, Proxy, Role};

/// Converts an haproxy.cfg; `file` names the input in comments of the output.
pub fn convert(text: &str, file: &str) -> Result<Conversion, ParseError> {
    let sections = sections(text)?;
    let mut w = Vec::new();
    let mut defaults = Common::default();
    let defaults_sections = sections.iter().filter(|s| s.kind == Kind::Defaults).count();
    // With one defaults section its timeouts become lb.toml's [defaults]; with several,
    // each proxy gets the values of the section before it written out in full.
    let inline = defaults_sections > 1;
    let mut lb_defaults = Table::new("[defaults]", String::new());
    let mut proxies: Vec<Proxy> = Vec::new();
    for s in &sections {
        match &s.kind {
            Kind::Global => global(s, &mut lb_defaults, file, &mut w),
            Kind::Defaults => {
                let mut p = Proxy::new(s, Common::default());
                for l in &s.body {
                    p.directive(l, Role::Defaults, &mut w);
                }
                defaults = p.common;
                if !inline {
                    lb_defaults.comment(format!("{file}:{}: defaults", s.line));
                    defaults.frontend_keys(&mut lb_defaults);
                    defaults.backend_keys(&mut lb_defaults, true);
                }
            }
            Kind::Frontend | Kind::Backend | Kind::Listen => {
                let base = if inline {
                    defaults.clone()
                } else {
                    defaults.backend_only()
                };
                let mut p = Proxy::new(s, base);
                let role = match s.kind {
                    Kind::Frontend => Role::Frontend,
                    Kind::Backend => Role::Backend,
                    _ => Role::Listen,
                };
                if let Some(addr) = s.args.first() {
                    if role == Role::Backend {
                        w.push(Warning::new(
                            s.line,
                            format!("backend {} {addr}", s.name),
                            "a backend has no address",
                        ));
                    } else {
                        p.bind(s.line, std::slice::from_ref(addr), &mut w);
                    }
                }
                for l in &s.body {
                    p.directive(l, role, &mut w);
                }
                proxies.push(p);
            }
            Kind::Other(k) => w.push(Warning::new(
                s.line,
                format!("{k} {}", s.name).trim_end().to_string(),
                other_section_why(k),
            )),
        }
    }
    let mut lb = assemble(&proxies, file, &mut w);
    if lb.frontends.is_empty() {
        return Err(ParseError::new(
            text.lines().count().max(1),
            "no frontend or listen section could be converted; nothing to write",
        ));
    }
    lb.header = vec![
        format!("Converted by `tether import haproxy` from {file}."),
        "Every block says which lines it came from; `tether lb --check --config lb.toml` validates it.".into(),
    ];
    if !lb_defaults.is_empty() {
        lb.defaults = Some(lb_defaults);
    }
    w.sort_by_key(|x| x.line);
    Ok(Conversion {
        files: vec![("lb.toml", lb.render())],
        warnings: w,
    })
}

fn other_section_why(kind: &str) -> &'static str {
    match kind {
        "resolvers" => {
            "tether resolves host:port server addresses with [resolver] nameservers (default: /etc/resolv.conf)"
        }
        "peers" => "tether has no stick tables to share",
        "userlist" | "cache" | "http-errors" | "fcgi-app" => "HTTP features; tether lb is layer 4",
        _ => "tether lb has no such section",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    Other(String),
}

/// One directive: its line and words (quotes and escapes resolved).
#[derive(Debug, Clone)]
struct Line {
    no: usize,
    words: Vec<String>,
}

impl Line {
    fn arg(&self, i: usize) -> &str {
        super::arg(&self.words, i)
    }

    /// The directive as the warning names it: keyword plus its first argument(s).
    fn label(&self, n: usize) -> String {
        super::label(&self.words, n)
    }
}

#[derive(Debug)]
struct Section {
    kind: Kind,
    name: String,
    args: Vec<String>,
    line: usize,
    body: Vec<Line>,
}

const OTHER_SECTIONS: &[&str] = &[
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
    "cache",
    "http-errors",
    "ring",
    "log-forward",
    "fcgi-app",
    "crt-store",
    "traces",
];

fn sections(text: &str) -> Result<Vec<Section>, ParseError> {
    let mut out: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let words = words(raw).map_err(|m| ParseError::new(no, m))?;
        let Some(first) = words.first() else {
            continue;
        };
        let kind = match first.as_str() {
            "global" => Some(Kind::Global),
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            k if OTHER_SECTIONS.contains(&k) => Some(Kind::Other(k.to_string())),
            _ => None,
        };
        match kind {
            Some(kind) => {
                let name = words.get(1).cloned().unwrap_or_default();
                if name.is_empty() && matches!(kind, Kind::Frontend | Kind::Backend | Kind::Listen)
                {
                    return Err(ParseError::new(no, format!("{first} without a name")));
                }
                out.push(Section {
                    kind,
                    name,
                    args: words.iter().skip(2).cloned().collect(),
                    line: no,
                    body: Vec::new(),
                });
            }
            None => match out.last_mut() {
                Some(s) => s.body.push(Line { no, words }),
                None => {
                    return Err(ParseError::new(
                        no,
                        format!(
                            "\"{first}\" outside any section (global, defaults, frontend, backend, listen)"
                        ),
                    ));
                }
            },
        }
    }
    if out.is_empty() {
        return Err(ParseError::new(1, "no section: this is not an haproxy.cfg"));
    }
    Ok(out)
}

/// Splits a line into words as HAProxy does: blanks separate, `#` starts a comment,
/// `\` escapes the next character, and single or double quotes group.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                in_word = true;
                match chars.next() {
                    Some('r') if quote.is_some() => cur.push('\r'),
                    Some('n') if quote.is_some() => cur.push('\n'),
                    Some('r') => cur.push('\r'),
                    Some('n') => cur.push('\n'),
                    Some(n) => cur.push(n),
                    None => return Err("line ends with a lone backslash".into()),
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// HAProxy time: a number with an optional unit (us, ms, s, m, h, d); bare is ms.
fn time(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" | "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n).max(Duration::from_millis(if n > 0 { 1 } else { 0 })),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => return None,
    })
}

fn global(s: &Section, defaults: &mut Table, file: &str, w: &mut Vec<Warning>) {
    for l in &s.body {
        let why = match l.arg(0) {
            "hard-stop-after" => match time(l.arg(1)) {
                Some(t) if !t.is_zero() => {
                    defaults.comment(format!("{file}:{}: hard-stop-after", l.no));
                    defaults.set("grace_period", Val::Dur(t));
                    continue;
                }
                _ => "not a time",
            },
            "maxconn" => {
                "a process-wide limit; tether limits connections per frontend (maxconn on [[frontend]] or [defaults])"
            }
            "nbthread" | "nbproc" | "cpu-map" => {
                "use `tether lb --workers N` (default: one worker per core)"
            }
            "daemon" | "master-worker" | "pidfile" => {
                "systemd runs tether in the foreground (Type=notify); there is no pid file"
            }
            "user" | "group" | "uid" | "gid" | "chroot" => {
                "the systemd unit sets the user and the sandbox"
            }
            "stats" => "use the admin HTTP listener ([admin] listen: /stats, /metrics, /api)",
            "log" | "log-send-hostname" | "log-tag" => {
                "tether logs to stderr (the journal), as text or --log-format json"
            }
            k if k.starts_with("ssl-") || k.starts_with("tune.ssl") => {
                "tether passes TLS through and terminates none"
            }
            _ => "no equivalent in tether lb",
        };
        w.push(Warning::new(l.no, l.label(2), why));
    }
}

#[cfg(test)]
mod tests;
