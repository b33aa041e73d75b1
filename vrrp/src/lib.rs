//! tether-vrrp: a VRRP v2/v3 daemon wire-compatible with keepalived 2.2.7.
//!
//! The protocol is sans-IO ([`packet`] codec, [`fsm`] state machine, [`track`]
//! arithmetic); the Linux driver around it ([`daemon`]) stays thin: raw sockets for
//! protocol 112, rtnetlink for VIPs, packet sockets for gratuitous ARP / NA.
#![warn(missing_docs)]

pub mod config;
pub mod fsm;
pub mod packet;
pub mod track;
