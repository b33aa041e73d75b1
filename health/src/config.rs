//! Loading TOML configuration with errors that name the file, the line and the key.
//!
//! Parsing (serde, `deny_unknown_fields`) reports the span toml gives; the validation pass
//! of each daemon reports a key path, and [`Source::error`] turns that path into a line by
//! walking a span-keeping parse of the same text. [`check`] is the health-check table the
//! three daemons share, with its one validator.

pub mod check;
mod read;

use std::fmt;
use std::path::Path;

pub use read::{LOAD_TIMEOUT, MAX_FILE, off_thread, read_file};

use serde::de::DeserializeOwned;
use thiserror::Error;

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key in a table.
    Key(String),
    /// An element of an array (of tables).
    Index(usize),
}

impl From<&str> for Seg {
    fn from(key: &str) -> Self {
        Seg::Key(key.to_string())
    }
}

impl From<usize> for Seg {
    fn from(index: usize) -> Self {
        Seg::Index(index)
    }
}

/// One configuration error, displayed as `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigError {
    /// The file's name as the user gave it.
    pub file: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The dotted key, e.g. `backend[1].server[0].weight`; empty for whole-file errors.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found in one file; a config with any of them is not used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The text of a configuration file, kept to locate keys for validation errors.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file's name as given.
    pub file: String,
    /// Its contents.
    pub text: String,
}

impl Source {
    /// Reads a configuration file: a regular file of at most [`MAX_FILE`] bytes of UTF-8.
    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        let file = path.display().to_string();
        let error = |message: String| -> ConfigErrors {
            ConfigError {
                file: file.clone(),
                line: None,
                key: String::new(),
                message,
            }
            .into()
        };
        let bytes = read_file(path).map_err(error)?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Source { file, text }),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let bytes = e.as_bytes();
                let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
                let column = at
                    - bytes[..at]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1)
                    + 1;
                Err(ConfigError {
                    file: file.clone(),
                    line: Some(line),
                    key: String::new(),
                    message: format!(
                        "invalid UTF-8 at column {column} (byte {at}); the file must be UTF-8 text"
                    ),
                }
                .into())
            }
        }
    }

    /// Wraps text that did not come from a file (embedded defaults, tests).
    pub fn from_text(file: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            file: file.into(),
            text: text.into(),
        }
    }

    /// Deserializes the text, turning a parse error into a located [`ConfigError`].
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigErrors> {
        self.parse_with_hints(|_| None)
    }

    /// [`Self::parse`], adding to an error at a known key what the daemon allows there:
    /// `hint` gets the key's path (e.g. `backend[0].server[1].weight` as segments) and may
    /// answer e.g. `an integer 1..=256`, which serde cannot know.
    pub fn parse_with_hints<T: DeserializeOwned>(
        &self,
        hint: impl Fn(&[Seg]) -> Option<&'static str>,
    ) -> Result<T, ConfigErrors> {
        toml::from_str(&self.text).map_err(|e| {
            let mut message = e.message().trim().to_string();
            let (line, key) = match e.span() {
                Some(span) => {
                    let key = match self.path_at(span.start) {
                        Some(path) => {
                            if let (Some(Seg::Key(k)), Some(allowed)) = (path.last(), hint(&path)) {
                                message = format!("{message}; {k} must be {allowed}");
                            }
                            dotted(&path)
                        }
                        None => self.key_on_line(span.start),
                    };
                    (Some(self.line_of(span.start)), key)
                }
                None => (None, String::new()),
            };
            ConfigError {
                file: self.file.clone(),
                line,
                key,
                message,
            }
            .into()
        })
    }

    /// The path of the value written at `offset`, e.g. `backend[0].retries`; `None` when the
    /// text does not parse as TOML or no value is there.
    fn path_at(&self, offset: usize) -> Option<Vec<Seg>> {
        let doc = toml_edit::Document::parse(self.text.as_str()).ok()?;
        let mut path = Vec::new();
        path_in_table(doc.as_table(), offset, &mut path).then_some(path)
    }

    /// An error about the key at `path`, located to its line when the key is in the text.
    pub fn error(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.locate(path),
            key: dotted(path),
            message: message.into(),
        }
    }

    /// The 1-based line of the key at `path`, or of the nearest enclosing table present.
    pub fn locate(&self, path: &[Seg]) -> Option<usize> {
        let doc = toml_edit::Document::parse(self.text.as_str()).ok()?;
        let mut node: &dyn toml_edit::TableLike = doc.as_table();
        let mut best = None;
        let mut segs = path.iter().peekable();
        while let Some(seg) = segs.next() {
            let Seg::Key(k) = seg else { break };
            let Some((key, item)) = node.get_key_value(k) else {
                break;
            };
            if let Some(span) = key.span() {
                best = Some(span.start);
            }
            let index = match segs.peek() {
                Some(Seg::Index(i)) => {
                    segs.next();
                    Some(*i)
                }
                _ => None,
            };
            let next: Option<&dyn toml_edit::TableLike> = match (item, index) {
                (toml_edit::Item::ArrayOfTables(a), Some(i)) => a.get(i).map(|t| {
                    if let Some(span) = t.span() {
                        best = Some(span.start);
                    }
                    t as &dyn toml_edit::TableLike
                }),
                (toml_edit::Item::Value(toml_edit::Value::Array(a)), Some(i)) => {
                    let v = a.get(i);
                    if let Some(span) = v.and_then(|v| v.span()) {
                        best = Some(span.start);
                    }
                    v.and_then(|v| v.as_inline_table())
                        .map(|t| t as &dyn toml_edit::TableLike)
                }
                (item, None) => item.as_table_like(),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        best.map(|offset| self.line_of(offset))
    }

    /// The key written on the line holding `offset` (`key = value` or `[table]`).
    fn key_on_line(&self, offset: usize) -> String {
        let offset = offset.min(self.text.len());
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next().unwrap_or("").trim();
        let key = match line.split_once('=') {
            Some((k, _)) => k,
            None => line,
        };
        key.trim()
            .trim_matches(|c| c == '[' || c == ']' || c == '"')
            .trim()
            .to_string()
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

fn path_in_table(t: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (k, item) in t.iter() {
        path.push(Seg::Key(k.to_string()));
        let found = match item {
            toml_edit::Item::Value(v) => path_in_value(v, offset, path),
            toml_edit::Item::Table(t) => path_in_table(t, offset, path),
            toml_edit::Item::ArrayOfTables(a) => a.iter().enumerate().any(|(i, t)| {
                path.push(Seg::Index(i));
                let found = path_in_table(t, offset, path);
                if !found {
                    path.pop();
                }
                found
            }),
            toml_edit::Item::None => false,
        };
        if found {
            return true;
        }
        path.pop();
    }
    false
}

fn path_in_value(v: &toml_edit::Value, offset: usize, path: &mut Vec<Seg>) -> bool {
    if !v.span().is_some_and(|s| s.contains(&offset)) {
        return false;
    }
    match v {
        toml_edit::Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if path_in_value(e, offset, path) {
                    return true;
                }
                path.pop();
            }
        }
        toml_edit::Value::InlineTable(t) => {
            path_in_table(t, offset, path);
        }
        _ => {}
    }
    true
}

fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {

    /// Found by fuzzing the config parsers: toml_edit 0.23 panicked ("all items have
    /// spans") locating the key of this syntax error, so `--check` crashed instead of
    /// reporting it.
    #[test]
    fn a_dotted_key_after_a_broken_value_is_an_error_not_a_panic() {
        let src = Source::from_text("x.toml", "a = =\na.b = 2\n");
        let errs = src
            .parse::<std::collections::BTreeMap<String, toml::Value>>()
            .expect_err("not TOML");
        assert_eq!(errs.0[0].line, Some(1), "{errs}");
    }

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Top {
        backend: Vec<Backend>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Backend {
        name: String,
        #[serde(default)]
        server: Vec<Server>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        name: String,
        weight: u32,
    }

    const TEXT: &str = r#"
[[backend]]
name = "a"

[[backend]]
name = "web"

[[backend.server]]
name = "s1"
weight = 1

[[backend.server]]
name = "s2"
weight = 0
"#;

    #[test]
    fn locates_a_key_in_nested_arrays_of_tables() {
        let src = Source::from_text("lb.toml", TEXT);
        let e = src.error(
            &[
                "backend".into(),
                1.into(),
                "server".into(),
                1.into(),
                "weight".into(),
            ],
            "weight 0; weight must be 1..=256",
        );
        assert_eq!(e.line, Some(14));
        assert_eq!(
            e.to_string(),
            "lb.toml:14: backend[1].server[1].weight: weight 0; weight must be 1..=256"
        );
    }

    #[test]
    fn a_missing_key_points_at_its_table() {
        let src = Source::from_text("lb.toml", TEXT);
        let e = src.error(&["backend".into(), 0.into(), "balance".into()], "x");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let src = Source::from_text("lb.toml", format!("{TEXT}colour = \"red\"\n"));
        let err = src.parse::<Top>().unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.line, Some(15));
        assert!(
            e.message.contains("unknown field `colour`"),
            "{}",
            e.message
        );
        assert!(e.message.contains("expected"), "{}", e.message);
    }

    /// A path in the temporary directory for this test run; the test removes the file.
    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("tether-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn a_fifo_a_device_and_a_huge_file_are_refused_without_blocking() {
        let fifo = temp("fifo.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Source::read(&fifo).unwrap_err().to_string();
        assert!(
            err.ends_with("is not a regular file (a FIFO); give the path of a file"),
            "{err}"
        );

        let err = Source::read(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/dev/zero: is not a regular file (a device); give the path of a file"
        );

        let big = temp("big.toml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE + 1)
            .unwrap();
        let err = Source::read(&big).unwrap_err().to_string();
        assert!(
            err.ends_with(": is 16777217 bytes; the limit is 16777216 (16 MiB)"),
            "{err}"
        );
        let _ = std::fs::remove_file(fifo);
        let _ = std::fs::remove_file(big);
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_line() {
        let p = temp("latin1.toml");
        std::fs::write(&p, b"[admin]\nlisten = \"caf\xe9\"\n").unwrap();
        let err = Source::read(&p).unwrap_err();
        assert_eq!(err.0[0].line, Some(2));
        assert!(
            err.to_string().contains(":2: invalid UTF-8 at column 14"),
            "{err}"
        );
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn a_file_that_does_not_exist_says_so() {
        let err = Source::read(Path::new("/nonexistent/tether.toml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/tether.toml: cannot read"),
            "{err}"
        );
    }
}
