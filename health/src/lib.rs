//! Health checks of other services and the admin HTTP surface every Tether daemon serves.
//!
//! - [`check`]: TCP, HTTP, TLS and exec checkers, the sans-IO [`check::RiseFall`] state
//!   machine they share, and [`check::spawn_monitor`], the jittered loop that drives them.
//! - [`admin`]: the `/metrics`, `/healthz` and `/readyz` router a daemon extends with its
//!   own routes.
//! - [`config`]: TOML loading whose errors name the file, the line and the key, and
//!   [`config::check`], the health-check table the three daemons share.
//! - [`http`]: a small HTTP/1.1 GET client used by checks and tests.
//! - [`logs`]: the lossy asynchronous log writer and its drop counter.
//! - [`resolve`]: `host:port` targets resolved again every interval (lb servers, gateway
//!   exports), and [`resolve::Follow`], the sans-IO core of following one name.
//! - [`signals`]: SIGTERM/SIGINT as a cancellation token, SIGHUP as reload requests.
//! - [`tools`]: the echo server and the connection prober used by the demo and tests.
#![warn(missing_docs)]

pub mod admin;
pub mod check;
pub mod config;
pub mod http;
pub mod logs;
pub mod resolve;
pub mod signals;
pub mod tools;

pub use check::{CheckKind, Checker, HealthEvent, RiseFall};
pub use config::ConfigError;
