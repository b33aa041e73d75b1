//! The kinds of check: TCP connect, HTTP GET, TLS handshake and exec.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;

/// Why a check failed. The text goes into logs and the `/api/state` JSON.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The check did not finish within its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The TCP connect failed.
    #[error("connect: {0}")]
    Connect(String),
    /// The HTTP exchange failed or was malformed.
    #[error("http: {0}")]
    Http(String),
    /// The HTTP answer had another status than expected.
    #[error("http status {got}, expected {expected}")]
    Status {
        /// What the server answered.
        got: u16,
        /// What the check expects.
        expected: u16,
    },
    /// The TLS handshake failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The command could not run or exited non-zero.
    #[error("exec: {0}")]
    Exec(String),
    /// The target is a host name that has not resolved yet (the last lookup's error).
    #[error("not resolved: {0}")]
    Unresolved(String),
}

/// What a check does against its target.
#[derive(Clone)]
pub enum CheckKind {
    /// Succeeds when a TCP connection is established.
    Tcp,
    /// Sends `GET path` and succeeds when the status is `expect_status`.
    Http {
        /// The request path, e.g. `/readyz/svc-a`.
        path: String,
        /// The `Host` header; the target address when absent.
        host: Option<String>,
        /// The status that counts as healthy.
        expect_status: u16,
    },
    /// Succeeds when a TLS handshake completes and the certificate verifies.
    Tls {
        /// The name sent as SNI and verified in the certificate.
        server_name: ServerName<'static>,
        /// Client configuration: roots to verify against, client certificate if any.
        config: Arc<rustls::ClientConfig>,
    },
    /// Runs a command; exit status 0 is healthy. The target address is not used.
    Exec {
        /// The program and its arguments (no shell).
        argv: Vec<String>,
    },
    /// Writes `preamble` right after connecting (a PROXY protocol header for a server that
    /// requires one), then runs `inner` (TCP, HTTP or TLS) on the same connection.
    WithPreamble {
        /// The bytes sent first.
        preamble: Vec<u8>,
        /// The check that follows.
        inner: Box<CheckKind>,
    },
}

impl std::fmt::Debug for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckKind::Tcp => f.write_str("tcp"),
            CheckKind::Http {
                path,
                expect_status,
                ..
            } => write!(f, "http GET {path} expect {expect_status}"),
            CheckKind::Tls { server_name, .. } => write!(f, "tls {server_name:?}"),
            CheckKind::Exec { argv } => write!(f, "exec {argv:?}"),
            CheckKind::WithPreamble { preamble, inner } => {
                write!(f, "{inner:?} after a {}-byte preamble", preamble.len())
            }
        }
    }
}

impl CheckKind {
    /// A TLS check verifying against the platform-independent Mozilla roots.
    pub fn tls_with_webpki_roots(server_name: ServerName<'static>) -> Self {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::tls_with_roots(server_name, roots)
    }

    /// A TLS check verifying against `roots`.
    pub fn tls_with_roots(server_name: ServerName<'static>, roots: rustls::RootCertStore) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        match config {
            Ok(config) => CheckKind::Tls {
                server_name,
                config: Arc::new(config),
            },
            // The ring provider always supports the default versions; keep a usable value
            // rather than panicking should that ever change.
            Err(_) => CheckKind::Tcp,
        }
    }

    /// The label used in metrics: `tcp`, `http`, `tls` or `exec`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Tls { .. } => "tls",
            CheckKind::Exec { .. } => "exec",
            CheckKind::WithPreamble { inner, .. } => inner.name(),
        }
    }
}

/// One check of one target, run again and again by a monitor.
#[derive(Debug, Clone)]
pub struct Checker {
    /// What to do.
    pub kind: CheckKind,
    /// Where to do it (unused by exec checks).
    pub target: SocketAddr,
    /// The whole check must finish within this.
    pub timeout: Duration,
}

impl Checker {
    /// Runs the check once.
    pub async fn check(&self) -> Result<(), CheckError> {
        match tokio::time::timeout(self.timeout, self.check_inner()).await {
            Ok(result) => result,
            Err(_) => Err(CheckError::Timeout(self.timeout)),
        }
    }

    async fn check_inner(&self) -> Result<(), CheckError> {
        if let CheckKind::Exec { argv } = &self.kind {
            return exec(argv).await;
        }
        let mut stream = connect(self.target).await?;
        let mut kind = &self.kind;
        while let CheckKind::WithPreamble { preamble, inner } = kind {
            use tokio::io::AsyncWriteExt;
            stream
                .write_all(preamble)
                .await
                .map_err(|e| CheckError::Connect(format!("sending preamble: {e}")))?;
            kind = inner;
        }
        match kind {
            CheckKind::Tcp => Ok(()),
            CheckKind::Http {
                path,
                host,
                expect_status,
            } => {
                let host = host.clone().unwrap_or_else(|| self.target.to_string());
                let response =
                    crate::http::request_on(stream, "GET", &host, path, &[], bytes::Bytes::new())
                        .await
                        .map_err(|e| CheckError::Http(e.to_string()))?;
                if response.status == *expect_status {
                    Ok(())
                } else {
                    Err(CheckError::Status {
                        got: response.status,
                        expected: *expect_status,
                    })
                }
            }
            CheckKind::Tls {
                server_name,
                config,
            } => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                connector
                    .connect(server_name.clone(), stream)
                    .await
                    .map(drop)
                    .map_err(|e| CheckError::Tls(e.to_string()))
            }
            CheckKind::Exec { argv } => exec(argv).await,
            CheckKind::WithPreamble { .. } => Ok(()),
        }
    }
}

async fn exec(argv: &[String]) -> Result<(), CheckError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(CheckError::Exec("empty command".into()));
    };
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // A command that outlives its timeout is killed with the future.
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| CheckError::Exec(format!("{program}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(CheckError::Exec(format!("{program}: {status}")))
    }
}

async fn connect(target: SocketAddr) -> Result<TcpStream, CheckError> {
    TcpStream::connect(target)
        .await
        .map_err(|e| CheckError::Connect(e.to_string()))
}
