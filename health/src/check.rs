//! Health checkers and the rise/fall state machine they share.

mod kinds;
mod monitor;
mod risefall;
pub mod tls;

pub use kinds::{CheckError, CheckKind, Checker};
pub use monitor::{HealthEvent, MonitorSpec, Target, spawn_following_monitor, spawn_monitor};
pub use risefall::{Health, RiseFall, Transition};
