//! `tether import`: converts an haproxy.cfg or a keepalived.conf into Tether's TOML.
//!
//! The converters are pure functions from text to [`Conversion`] (no file system, no
//! network), so every directive's mapping is a table test; only the `tether import`
//! command reads and writes files. What cannot be carried over is never dropped silently:
//! it becomes a [`Warning`] printed as `file:line: directive: not carried over: why`.

pub mod haproxy;
pub mod keepalived;
mod toml_out;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// A directive, or part of one, that has no equivalent in Tether.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line in the input.
    pub line: usize,
    /// The directive as written (keyword and, where it tells them apart, its argument).
    pub directive: String,
    /// Why it is not carried over, and what to do instead where there is something.
    pub why: String,
}

impl Warning {
    fn new(line: usize, directive: impl Into<String>, why: impl Into<String>) -> Self {
        Warning {
            line,
            directive: directive.into(),
            why: why.into(),
        }
    }

    /// The line printed on stderr.
    pub fn render(&self, file: &str) -> String {
        format!(
            "{file}:{}: {}: not carried over: {}",
            self.line, self.directive, self.why
        )
    }
}

/// Word `i` of a directive, or "" past its end.
fn arg(words: &[String], i: usize) -> &str {
    words.get(i).map_or("", String::as_str)
}

/// A directive as a warning names it: its first `n` words.
fn label(words: &[String], n: usize) -> String {
    words.iter().take(n).cloned().collect::<Vec<_>>().join(" ")
}

/// Input that cannot be read as a configuration of its kind at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
        }
    }
}

/// The result of a conversion: files to write and what was left behind.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    /// `(file name, TOML text)`, e.g. `("lb.toml", ...)`.
    pub files: Vec<(&'static str, String)>,
    /// Directives not carried over, in input order.
    pub warnings: Vec<Warning>,
}

impl Conversion {
    /// The TOML written to `name`, if the conversion produced that file.
    #[cfg(test)]
    pub fn file(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.as_str())
    }
}

/// What kind of configuration `tether import` reads.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// An haproxy.cfg (`mode tcp` proxies) into lb.toml.
    Haproxy,
    /// A keepalived.conf into vrrp.toml, and lb.toml for `lb_kind DR` virtual servers.
    Keepalived,
}

/// Arguments of `tether import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The kind of input.
    #[arg(value_enum)]
    kind: Kind,
    /// The configuration file to convert.
    input: PathBuf,
    /// Directory the TOML files are written into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// `tether import`: exit 0 when a conversion was written (even with warnings), 1 when the
/// input cannot be parsed.
pub fn main(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let label = args.input.display().to_string();
    let result = match args.kind {
        Kind::Haproxy => haproxy::convert(&text, &label),
        Kind::Keepalived => keepalived::convert(&text, &label),
    };
    let conversion = match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{label}:{}: {}", e.line, e.message);
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &conversion.warnings {
        eprintln!("{}", w.render(&label));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for (name, toml) in &conversion.files {
        let path = args.out.join(name);
        std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
