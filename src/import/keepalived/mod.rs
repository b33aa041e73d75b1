//! keepalived.conf to vrrp.toml (instances, scripts, sync groups) and lb.toml (LVS
//! direct-routing virtual servers as `mode = "dr"` frontends). Everything else is reported.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::toml_out::{LbFile, Table};
use super::{Conversion, ParseError, Warning};

mod lvs;
mod vrrp;

/// Converts a keepalived.conf; `file` names the input in comments of the output.
pub fn convert(text: &str, file: &str) -> Result<Conversion, ParseError> {
    let tree = parse(text)?;
    let mut cx = Cx {
        file,
        w: Vec::new(),
        version: 2,
        garp_repeat: None,
        garp_delay: None,
        scripts: HashMap::new(),
        vips: Vec::new(),
    };
    for n in &tree {
        match n.key() {
            "global_defs" => cx.global_defs(n),
            "vrrp_script" => cx.script(n),
            _ => {}
        }
    }
    let mut instances = Vec::new();
    let mut groups = Vec::new();
    let mut virtual_servers = Vec::new();
    for n in &tree {
        match n.key() {
            "global_defs" | "vrrp_script" => {}
            "vrrp_instance" => instances.extend(cx.instance(n)),
            "vrrp_sync_group" => groups.push(n),
            "virtual_server" => virtual_servers.push(n),
            "include" => cx.warn(
                n,
                2,
                "tether import reads one file; convert the included file on its own",
            ),
            _ => cx.warn(n, 2, "no equivalent in tether vrrp"),
        }
    }
    let names: Vec<String> = instances
        .iter()
        .map(|i: &Instance| i.name.clone())
        .collect();
    let mut vrrp = String::new();
    if !instances.is_empty() {
        vrrp.push_str(&format!(
            "# Converted by `tether import keepalived` from {file}.\n# Every block says which lines it came from; `tether vrrp --check --config vrrp.toml` validates it.\n"
        ));
        for i in &instances {
            i.table.render(&mut vrrp);
            for t in &i.tracks {
                t.render(&mut vrrp);
            }
        }
        for g in groups {
            if let Some(t) = cx.sync_group(g, &names) {
                t.render(&mut vrrp);
            }
        }
    }
    let mut lb = LbFile::default();
    for vs in virtual_servers {
        if let Some((f, b)) = cx.virtual_server(vs) {
            lb.frontends.push(f);
            lb.backends.push(b);
        }
    }
    let mut files = Vec::new();
    if !vrrp.is_empty() {
        files.push(("vrrp.toml", vrrp));
    }
    if !lb.frontends.is_empty() {
        lb.header = vec![
            format!("Converted by `tether import keepalived` from {file}: LVS direct-routing virtual servers."),
            "Every block says which lines it came from; `tether lb --check --config lb.toml` validates it.".into(),
        ];
        files.push(("lb.toml", lb.render()));
    }
    if files.is_empty() {
        return Err(ParseError::new(
            text.lines().count().max(1),
            "no vrrp_instance or direct-routing virtual_server could be converted; nothing to write",
        ));
    }
    cx.w.sort_by_key(|w| w.line);
    Ok(Conversion {
        files,
        warnings: cx.w,
    })
}

/// One statement: its words and, for a block, the statements inside.
#[derive(Debug, Clone)]
struct Node {
    line: usize,
    words: Vec<String>,
    children: Option<Vec<Node>>,
}

impl Node {
    fn key(&self) -> &str {
        self.arg(0)
    }
    fn arg(&self, i: usize) -> &str {
        super::arg(&self.words, i)
    }
    fn label(&self, n: usize) -> String {
        super::label(&self.words, n)
    }
    fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
    /// Every word inside a list block (`unicast_peer { a b }` or one per line).
    fn items(&self) -> Vec<(usize, &[String])> {
        self.children()
            .iter()
            .map(|c| (c.line, c.words.as_slice()))
            .collect()
    }
}

/// Splits keepalived.conf into statements and `{ }` blocks. `#` and `!` start comments;
/// double quotes group words; a `{` alone on a line opens the block of the line before.
fn parse(text: &str) -> Result<Vec<Node>, ParseError> {
    let mut stack: Vec<Vec<Node>> = vec![Vec::new()];
    let mut open: Vec<Node> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let mut cur: Vec<String> = Vec::new();
        for tok in tokens(raw).map_err(|m| ParseError::new(no, m))? {
            match tok.as_str() {
                "{" => {
                    let node = if cur.is_empty() {
                        match stack.last_mut().and_then(Vec::pop) {
                            Some(n) if n.children.is_none() => n,
                            _ => return Err(ParseError::new(no, "\"{\" opens no statement")),
                        }
                    } else {
                        Node {
                            line: no,
                            words: std::mem::take(&mut cur),
                            children: None,
                        }
                    };
                    open.push(node);
                    stack.push(Vec::new());
                }
                "}" => {
                    let (Some(mut node), Some(mut children)) = (open.pop(), stack.pop()) else {
                        return Err(ParseError::new(no, "\"}\" closes no block"));
                    };
                    if !cur.is_empty() {
                        children.push(Node {
                            line: no,
                            words: std::mem::take(&mut cur),
                            children: None,
                        });
                    }
                    node.children = Some(children);
                    match stack.last_mut() {
                        Some(top) => top.push(node),
                        None => return Err(ParseError::new(no, "\"}\" closes no block")),
                    }
                }
                _ => cur.push(tok),
            }
        }
        if !cur.is_empty() {
            if let Some(top) = stack.last_mut() {
                top.push(Node {
                    line: no,
                    words: cur,
                    children: None,
                });
            }
        }
    }
    if let Some(n) = open.last() {
        return Err(ParseError::new(
            n.line,
            format!("block \"{}\" is never closed", n.label(2)),
        ));
    }
    let top = stack.pop().unwrap_or_default();
    if top.is_empty() {
        return Err(ParseError::new(
            1,
            "no statement: this is not a keepalived.conf",
        ));
    }
    Ok(top)
}

fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            _ if quoted => cur.push(c),
            '#' | '!' if !in_word => break,
            '{' | '}' => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated \" quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Seconds as keepalived writes them (`1`, `0.1`), to the millisecond.
fn seconds(s: &str) -> Option<Duration> {
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| Duration::from_millis((f * 1000.0).round() as u64))
}

/// A `vrrp_script`.
#[derive(Debug, Clone)]
struct Script {
    line: usize,
    command: Option<Vec<String>>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    weight: Option<i64>,
    rise: Option<i64>,
    fall: Option<i64>,
}

/// A converted instance.
struct Instance {
    name: String,
    table: Table,
    tracks: Vec<Table>,
}

struct Cx<'a> {
    file: &'a str,
    w: Vec<Warning>,
    version: i64,
    garp_repeat: Option<i64>,
    garp_delay: Option<Duration>,
    scripts: HashMap<String, Script>,
    /// `(interface, vip, prefix)` of every converted instance, for DR frontends' links.
    vips: Vec<(String, IpAddr, u8)>,
}

impl Cx<'_> {
    fn warn(&mut self, n: &Node, words: usize, why: impl Into<String>) {
        self.w.push(Warning::new(n.line, n.label(words), why));
    }

    fn origin(&self, n: &Node) -> String {
        format!("{}:{}: {}", self.file, n.line, n.label(3))
    }

    fn int(&mut self, n: &Node) -> Option<i64> {
        let v = n.arg(1).parse().ok();
        if v.is_none() {
            self.warn(n, 2, "not a number");
        }
        v
    }

    fn secs(&mut self, n: &Node) -> Option<Duration> {
        let v = seconds(n.arg(1));
        if v.is_none() {
            self.warn(n, 2, "not a number of seconds");
        }
        v
    }
}

#[cfg(test)]
mod tests;
