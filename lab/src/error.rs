//! The lab's one error type.

/// Why a lab could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// This machine (or user) cannot create network namespaces.
    #[error("network namespaces are not available: {0}")]
    Unavailable(String),
    /// An address or network outside the documentation ranges.
    #[error(
        "{0} is outside the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24)"
    )]
    NotDocumentation(String),
    /// A malformed address or prefix.
    #[error("bad address {0:?}: expected a.b.c.d/len")]
    BadCidr(String),
    /// The lab description is inconsistent (unknown network, duplicate name, bad octet...).
    #[error("lab description: {0}")]
    Spec(String),
    /// Another live process owns a lab with this prefix.
    #[error("a lab named {prefix:?} is in use by pid {pid} (stop it first)")]
    InUse {
        /// The lab's prefix.
        prefix: String,
        /// Its owner.
        pid: u32,
    },
    /// A command of the lab's setup failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// No host of that name.
    #[error("no host named {0:?} in this lab")]
    UnknownHost(String),
    /// No process of that name.
    #[error("no process named {0:?} in this lab")]
    UnknownProcess(String),
    /// A process of that name exists already and is running.
    #[error("process {0:?} is already running")]
    AlreadyRunning(String),
    /// An I/O error (spawning, files, sockets, setns).
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}
