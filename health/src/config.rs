//! Loading TOML configuration with errors that name the file, the line and the key.
//!
//! Parsing (serde, `deny_unknown_fields`) reports the span toml gives; the validation pass
//! of each daemon reports a key path, and [`Source::error`] turns that path into a line by
//! walking a span-keeping parse of the same text.

use std::fmt;
use std::path::Path;

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
    /// Reads a file.
    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Source { file, text }),
            Err(e) => Err(ConfigError {
                file,
                line: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }
            .into()),
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
        toml::from_str(&self.text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => (Some(self.line_of(span.start)), self.key_on_line(span.start)),
                None => (None, String::new()),
            };
            ConfigError {
                file: self.file.clone(),
                line,
                key,
                message: e.message().trim().to_string(),
            }
            .into()
        })
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
