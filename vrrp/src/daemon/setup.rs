//! What must exist before an instance's machine starts: its interface, an address to
//! send from, and its three sockets. Each way this can fail is a [`SetupError`] variant,
//! so the driver decides what to do (report, set the `interface_present` gauge, retry)
//! by matching on the variant, never on the message.

use std::net::IpAddr;
use std::time::Duration;

use tracing::{error, info, warn};

use super::Ctx;
use crate::net::{FrameSocket, RxSocket, TxSocket};
use crate::netlink::{Link, Netlink, NetlinkError, primary_address};

/// How often a missing interface or address is looked for again.
const RETRY: Duration = Duration::from_secs(1);

/// Why an instance could not be set up (yet). Every variant is retried: the interface or
/// its address may appear later, and a permission problem may be fixed without a restart.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// rtnetlink failed (looking up the interface, listing or removing addresses).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// No interface of that name exists (yet).
    #[error("interface {0} not found")]
    InterfaceMissing(String),
    /// The interface has no address adverts can be sent from.
    #[error("no {family} address on {interface} to send adverts from")]
    NoSourceAddress {
        /// The interface.
        interface: String,
        /// "IPv6 link-local" or "primary IPv4".
        family: &'static str,
    },
    /// The raw receive socket could not be opened (permission: CAP_NET_RAW).
    #[error("opening receive socket on {interface}: {source}")]
    RxSocket {
        /// The interface.
        interface: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The raw send socket could not be opened or bound to the source address.
    #[error("opening send socket on {interface} from {src}: {source}")]
    TxSocket {
        /// The interface.
        interface: String,
        /// The source address it was bound to.
        src: IpAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The packet socket for gratuitous ARP / NA could not be opened.
    #[error("opening packet socket on {interface}: {source}")]
    FrameSocket {
        /// The interface.
        interface: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Everything resolved about the interface before the state machine may start.
pub(super) struct Setup {
    pub(super) link: Link,
    pub(super) src: IpAddr,
    pub(super) rx: RxSocket,
    pub(super) tx: TxSocket,
    pub(super) frames: FrameSocket,
}

/// Waits for the interface and its address, removes stale VIPs (first time only) and
/// opens sockets. Returns `None` on shutdown.
pub(super) async fn setup(ctx: &Ctx, nl: &Netlink, first: bool) -> Option<Setup> {
    let cfg = ctx.cfg();
    let name = &cfg.name;
    let mut reported = None::<String>;
    loop {
        match attempt(ctx, nl, first).await {
            Ok(s) => {
                ctx.problem(None);
                info!(instance = %name, interface = %cfg.interface, src = %s.src, vrid = cfg.vrid, "instance ready");
                return Some(s);
            }
            Err(e) => {
                if let SetupError::InterfaceMissing(_) = e {
                    ctx.metrics
                        .interface_present
                        .with_label_values(&[name])
                        .set(0);
                }
                let e = e.to_string();
                // Report once per distinct problem, then retry quietly.
                if reported.as_deref() != Some(e.as_str()) {
                    error!(instance = %name, "{e}; retrying every {}s", RETRY.as_secs());
                    reported = Some(e.clone());
                }
                ctx.problem(Some(e));
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = ctx.shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// One try at [`setup`].
async fn attempt(ctx: &Ctx, nl: &Netlink, first: bool) -> Result<Setup, SetupError> {
    let cfg = ctx.cfg();
    let name = &cfg.name;
    let link = nl
        .link(&cfg.interface)
        .await?
        .ok_or_else(|| SetupError::InterfaceMissing(cfg.interface.clone()))?;
    ctx.metrics
        .interface_present
        .with_label_values(&[name])
        .set(1);
    let addrs = nl.addrs(link.index).await?;
    if first {
        let stale: Vec<_> = cfg
            .vips
            .iter()
            .filter(|v| addrs.iter().any(|a| a.addr == v.addr))
            .copied()
            .collect();
        if !stale.is_empty() {
            warn!(
                instance = %name,
                interface = %cfg.interface,
                "found {} configured VIP(s) on the interface at start ({}), left by an unclean stop; \
                 another host may have held them too until now; removing",
                stale.len(),
                stale.iter().map(|v| v.addr.to_string()).collect::<Vec<_>>().join(", ")
            );
            for v in stale {
                nl.del_vip(link.index, v).await?;
                ctx.metrics.stale_vips.with_label_values(&[name]).inc();
            }
        }
    }
    let src = match cfg.unicast_src {
        Some(s) => s,
        None => primary_address(&addrs, cfg.is_v6(), &cfg.vips).ok_or_else(|| {
            SetupError::NoSourceAddress {
                interface: cfg.interface.clone(),
                family: if cfg.is_v6() {
                    "IPv6 link-local"
                } else {
                    "primary IPv4"
                },
            }
        })?,
    };
    let interface = || cfg.interface.clone();
    let multicast = cfg.unicast_peers.is_empty();
    let rx =
        RxSocket::open(&cfg.interface, link.index, cfg.is_v6(), multicast).map_err(|source| {
            SetupError::RxSocket {
                interface: interface(),
                source,
            }
        })?;
    let tx =
        TxSocket::open(&cfg.interface, link.index, src).map_err(|source| SetupError::TxSocket {
            interface: interface(),
            src,
            source,
        })?;
    let frames = FrameSocket::open(link.index).map_err(|source| SetupError::FrameSocket {
        interface: interface(),
        source,
    })?;
    Ok(Setup {
        link,
        src,
        rx,
        tx,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are what operators and tests (`interface vrrp9 not found`) read.
    #[test]
    fn messages_name_the_interface_and_what_is_missing() {
        let missing = SetupError::InterfaceMissing("vrrp9".into());
        assert_eq!(missing.to_string(), "interface vrrp9 not found");
        let no_src = SetupError::NoSourceAddress {
            interface: "eth0".into(),
            family: "IPv6 link-local",
        };
        assert_eq!(
            no_src.to_string(),
            "no IPv6 link-local address on eth0 to send adverts from"
        );
        let denied = SetupError::RxSocket {
            interface: "eth0".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(
            denied
                .to_string()
                .starts_with("opening receive socket on eth0: "),
            "{denied}"
        );
    }
}
