//! tether-gateway: cloud and on-prem gateways over prepared reverse connections.
//!
//! An on-prem gateway keeps `prepared_connections` mutual-TLS sessions to **every** cloud
//! node, each multiplexed with the yamux wire format. Cloud nodes open reverse streams on
//! them for their clients; on-prem opens forward streams for its local clients. A cloud node
//! is ready for a service only while it holds a live session that exports the service with
//! its server up, and by default does not even listen otherwise, so a balancer in front never
//! strands a client on a node that cannot serve it.
//!
//! Sans-IO cores: [`readiness`] (cloud) and [`placement`] (on-prem), with [`backoff`];
//! wire formats in [`proto`]; configuration in [`config`].
#![warn(missing_docs)]

pub mod backoff;
pub mod config;
pub mod placement;
pub mod proto;
pub mod readiness;
