//! Writing TOML by hand, table by table, so that every block can say in a comment which
//! line of the original it came from (a serializer would drop the comments).

use std::fmt::Write;
use std::time::Duration;

/// A value of a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    Strs(Vec<String>),
    Dur(Duration),
}

impl Val {
    fn render(&self) -> String {
        match self {
            Val::Str(s) => quote(s),
            Val::Int(i) => i.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Strs(v) => {
                let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
                format!("[{}]", items.join(", "))
            }
            Val::Dur(d) => quote(&duration(*d)),
        }
    }
}

/// A TOML basic string (the toml crate's own quoting, so any byte is escaped right).
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `1500ms`, `2s`: exact, and what a person would write.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// One `[table]` or `[[array.table]]` with the comment lines above it.
#[derive(Debug, Clone)]
pub struct Table {
    header: String,
    comments: Vec<String>,
    entries: Vec<(String, Val, Option<String>)>,
}

impl Table {
    /// `header` as written between the brackets, e.g. `[backend.server]`; `origin` says
    /// where in the input the block came from.
    pub fn new(header: &str, origin: String) -> Self {
        Table {
            header: header.to_string(),
            comments: if origin.is_empty() {
                Vec::new()
            } else {
                vec![origin]
            },
            entries: Vec::new(),
        }
    }

    /// Sets `key`, replacing an earlier value of the same key.
    pub fn set(&mut self, key: &str, val: Val) -> &mut Self {
        self.set_noted(key, val, None)
    }

    /// Sets `key` with a comment at the end of its line.
    pub fn set_noted(&mut self, key: &str, val: Val, note: Option<String>) -> &mut Self {
        match self.entries.iter_mut().find(|(k, _, _)| k == key) {
            Some(e) => {
                e.1 = val;
                e.2 = note;
            }
            None => self.entries.push((key.to_string(), val, note)),
        }
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Val> {
        self.entries.iter().find(|(k, _, _)| k == key).map(|e| &e.1)
    }

    /// A comment line above the table.
    pub fn comment(&mut self, line: impl Into<String>) -> &mut Self {
        self.comments.push(line.into());
        self
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the table to `out`.
    pub fn render(&self, out: &mut String) {
        if !out.is_empty() {
            out.push('\n');
        }
        for c in &self.comments {
            let _ = writeln!(out, "# {c}");
        }
        let _ = writeln!(out, "{}", self.header);
        for (k, v, note) in &self.entries {
            match note {
                Some(n) => {
                    let _ = writeln!(out, "{k} = {}  # {n}", v.render());
                }
                None => {
                    let _ = writeln!(out, "{k} = {}", v.render());
                }
            }
        }
    }
}

/// A `[[backend]]` of lb.toml with its health table and servers.
#[derive(Debug, Clone)]
pub struct Backend {
    pub table: Table,
    pub health: Option<Table>,
    pub servers: Vec<Table>,
}

/// A `[[frontend]]` of lb.toml with its SNI routes.
#[derive(Debug, Clone)]
pub struct Frontend {
    pub table: Table,
    pub routes: Vec<Table>,
}

/// A whole lb.toml: both converters write one (HAProxy proxies, keepalived's DR virtual
/// servers), so the order of its tables is decided in one place.
#[derive(Debug, Clone, Default)]
pub struct LbFile {
    pub header: Vec<String>,
    pub defaults: Option<Table>,
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
}

impl LbFile {
    /// The TOML text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for h in &self.header {
            let _ = writeln!(out, "# {h}");
        }
        if let Some(d) = self.defaults.as_ref().filter(|d| !d.is_empty()) {
            d.render(&mut out);
        }
        for f in &self.frontends {
            f.table.render(&mut out);
            for r in &f.routes {
                r.render(&mut out);
            }
        }
        for b in &self.backends {
            b.table.render(&mut out);
            if let Some(h) = &b.health {
                h.render(&mut out);
            }
            for s in &b.servers {
                s.render(&mut out);
            }
        }
        out
    }
}

/// A name Tether accepts (1..=64 of `A-Z a-z 0-9 - _ .`), made from one that may hold
/// other characters (HAProxy allows `:`, keepalived instance names are free text).
pub fn name(raw: &str) -> String {
    let mut n: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if n.is_empty() {
        n.push('_');
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_toml_and_durations_exactly() {
        let mut t = Table::new("[[backend]]", "from x:1".into());
        t.set("name", Val::Str("a\"b".into()))
            .set("n", Val::Int(3))
            .set("on", Val::Bool(true))
            .set("bind", Val::Strs(vec!["1.2.3.4:5".into()]))
            .set_noted(
                "t",
                Val::Dur(Duration::from_millis(1500)),
                Some("why".into()),
            )
            .set("u", Val::Dur(Duration::from_secs(60)))
            .set("n", Val::Int(4));
        let mut out = String::new();
        t.render(&mut out);
        assert_eq!(
            out,
            "# from x:1\n[[backend]]\nname = 'a\"b'\nn = 4\non = true\nbind = [\"1.2.3.4:5\"]\nt = \"1500ms\"  # why\nu = \"60s\"\n"
        );
    }

    #[test]
    fn names_keep_allowed_characters_only() {
        assert_eq!(name("be:web/1"), "be_web_1");
        assert_eq!(name(""), "_");
        assert_eq!(name(&"x".repeat(70)).len(), 64);
    }
}
