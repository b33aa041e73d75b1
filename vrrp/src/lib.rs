//! tether-vrrp: a VRRP v2/v3 daemon wire-compatible with keepalived 2.2.7.
//!
//! The protocol is sans-IO ([`packet`] codec, [`fsm`] state machine, [`track`]
//! arithmetic); the Linux driver around it ([`daemon`]) stays thin: raw sockets for
//! protocol 112, rtnetlink for VIPs, packet sockets for gratuitous ARP / NA.
//!
//! - [`config`]: the TOML and its validation; [`reload`]: the pure plan of what a new file
//!   changes, instance by instance.
//! - [`admit`]: whether a received advert is taken (a synchronous policy); [`rx`]: the
//!   receive path's socket and checks.
//! - [`sync`]: sync groups, members that change state together (sans-IO).
//! - [`net`], [`netlink`]: the sockets and rtnetlink (addresses, link events).
//! - [`notify`]: keepalived-style notify scripts; [`metrics`]: the Prometheus families.
#![warn(missing_docs)]

pub mod admit;
pub mod config;
pub mod daemon;
pub mod fsm;
pub mod metrics;
pub mod net;
pub mod netlink;
pub mod notify;
pub mod packet;
pub mod reload;
pub mod rx;
pub mod sync;
pub mod track;

pub use config::{Config, load};
pub use daemon::{DaemonHandle, Reloader, reload_on, run, start};
