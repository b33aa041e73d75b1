//! rtnetlink access: interface lookup and state, the addresses on it, and VIP add/remove.
//!
//! The netlink socket is opened in the network namespace of the thread that calls
//! [`Netlink::open`], which is what lets tests run the daemon inside a namespace.

use std::net::{IpAddr, Ipv6Addr};

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::Handle;

use crate::config::Vip;

/// Netlink failures.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("opening rtnetlink socket: {0}")]
    Open(#[source] std::io::Error),
    /// The kernel refused a request.
    #[error("{what}: {source}")]
    Request {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
}

/// What the daemon needs to know about its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Hardware address (zeros if none).
    pub mac: [u8; 6],
    /// Administratively up and carrier present (IFF_UP and IFF_RUNNING).
    pub up: bool,
}

/// One address found on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// IPv4 secondary flag (primary addresses are the advert source).
    pub secondary: bool,
}

/// Link changes in the caller's network namespace as the kernel announces them (the
/// `RTNLGRP_LINK` multicast group): a link going down is known within milliseconds, not at
/// the next poll.
pub struct LinkEvents {
    rx: futures::channel::mpsc::UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

impl LinkEvents {
    /// Subscribes, on a netlink socket of its own, and spawns its connection task.
    pub fn subscribe() -> Result<LinkEvents, NetlinkError> {
        use rtnetlink::sys::AsyncSocket;
        let (mut conn, _handle, rx) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        conn.socket_mut()
            .socket_mut()
            .bind(&rtnetlink::sys::SocketAddr::new(
                0,
                rtnetlink::constants::RTMGRP_LINK,
            ))
            .map_err(NetlinkError::Open)?;
        tokio::spawn(conn);
        Ok(LinkEvents { rx })
    }

    /// Waits for the next change of any link; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<()> {
        self.rx.next().await.map(|_| ())
    }
}

/// A handle on rtnetlink in the caller's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink socket and spawns its connection task on the current runtime.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Looks an interface up by name; `Ok(None)` if it does not exist.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_from(&msg))),
            Ok(None) => Ok(None),
            // ENODEV: no such interface, which the daemon reports and retries.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(source) => Err(NetlinkError::Request {
                what: format!("looking up interface {name}"),
                source,
            }),
        }
    }

    /// Lists the addresses on an interface.
    pub async fn addrs(&self, index: u32) -> Result<Vec<IfAddr>, NetlinkError> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        loop {
            match s.try_next().await {
                Ok(Some(msg)) => {
                    if msg.header.index != index {
                        continue;
                    }
                    if let Some(a) = addr_from(&msg) {
                        out.push(a);
                    }
                }
                Ok(None) => break,
                Err(source) => {
                    return Err(NetlinkError::Request {
                        what: format!("listing addresses of ifindex {index}"),
                        source,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Adds a VIP (IPv6 with NODAD, as keepalived does, so it is usable at once).
    /// Adding an address that is already there is not an error.
    pub async fn add_vip(&self, index: u32, vip: Vip) -> Result<(), NetlinkError> {
        let mut req = self.handle.address().add(index, vip.addr, vip.prefix);
        if vip.addr.is_ipv6() {
            let m = req.message_mut();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                what: format!("adding {}/{}", vip.addr, vip.prefix),
                source,
            }),
        }
    }

    /// Removes a VIP; removing one that is not there is not an error.
    pub async fn del_vip(&self, index: u32, vip: Vip) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = match vip.addr {
            IpAddr::V4(_) => netlink_packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => netlink_packet_route::AddressFamily::Inet6,
        };
        msg.header.prefix_len = vip.prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Address(vip.addr));
        if vip.addr.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(vip.addr));
        }
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENOENT =>
            {
                Ok(())
            }
            Err(source) => Err(NetlinkError::Request {
                what: format!("removing {}/{}", vip.addr, vip.prefix),
                source,
            }),
        }
    }
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut mac = [0u8; 6];
    for a in &msg.attributes {
        if let LinkAttribute::Address(b) = a {
            if b.len() == 6 {
                mac.copy_from_slice(b);
            }
        }
    }
    let f = msg.header.flags;
    Link {
        index: msg.header.index,
        mac,
        up: f.contains(LinkFlags::Up) && f.contains(LinkFlags::Running),
    }
}

fn addr_from(msg: &AddressMessage) -> Option<IfAddr> {
    let mut local = None;
    let mut address = None;
    let mut flags = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = Some(*f),
            _ => {}
        }
    }
    let secondary = flags
        .map(|f| f.contains(AddressFlags::Secondary))
        .unwrap_or_else(|| msg.header.flags.contains(AddressHeaderFlags::Secondary));
    Some(IfAddr {
        addr: local.or(address)?,
        prefix: msg.header.prefix_len,
        secondary,
    })
}

/// Picks the advert source: the first primary IPv4 address that is not a VIP, or the
/// first IPv6 link-local address.
pub fn primary_address(addrs: &[IfAddr], v6: bool, vips: &[Vip]) -> Option<IpAddr> {
    let is_vip = |a: IpAddr| vips.iter().any(|v| v.addr == a);
    addrs
        .iter()
        .filter(|a| !is_vip(a.addr))
        .find(|a| match a.addr {
            IpAddr::V4(_) => !v6 && !a.secondary,
            IpAddr::V6(x) => v6 && is_link_local(x),
        })
        .map(|a| a.addr)
}

/// fe80::/10.
pub fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ia(s: &str, secondary: bool) -> IfAddr {
        IfAddr {
            addr: s.parse().unwrap(),
            prefix: 24,
            secondary,
        }
    }

    #[test]
    fn primary_skips_vips_secondaries_and_other_family() {
        let vips = [Vip {
            addr: "192.0.2.100".parse().unwrap(),
            prefix: 24,
        }];
        let addrs = [
            ia("192.0.2.100", false),
            ia("2001:db8::1", false),
            ia("fe80::1", false),
            ia("192.0.2.5", true),
            ia("192.0.2.1", false),
        ];
        assert_eq!(
            primary_address(&addrs, false, &vips),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            primary_address(&addrs, true, &vips),
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(primary_address(&addrs[..2], false, &vips), None);
    }
}
