//! The announcement in the kernel: a TUN device that lives exactly as long as this process,
//! and a route per announced VIP through it in a table of its own.
//!
//! The routing daemon (BIRD's `kernel` protocol with `learn`) picks the routes up and
//! exports them. The device is not persistent, so when the process dies for any reason
//! (SIGKILL, a crash, the OOM killer) the kernel deletes it with its routes and the routing
//! daemon withdraws the VIPs: nothing announces a VIP that no live balancer stands behind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use futures::TryStreamExt;
use netlink_packet_route::route::{RouteMessage, RouteProtocol};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// The routing protocol number of an announced route (`ip route` shows `proto 216`; BIRD
/// sees it as `krt_source`).
pub const PROTO_ANNOUNCED: u8 = 216;

/// The routing protocol number of a route announced as degraded, which the routing
/// daemon's export filter turns into a worse preference (`krt_source = 217`).
pub const PROTO_DEGRADED: u8 = 217;

/// Failures making or changing the announcement.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// `/dev/net/tun` could not be opened or the device made.
    #[error("creating TUN device {device}: {source}")]
    Tun {
        /// The device's name.
        device: String,
        /// The error from the OS.
        #[source]
        source: std::io::Error,
    },
    /// The netlink socket could not be opened.
    #[error("opening rtnetlink socket: {0}")]
    Netlink(#[source] std::io::Error),
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

/// The device and a netlink handle to change its routes.
pub struct Device {
    // Held, never read: closing it is what deletes the device.
    _fd: OwnedFd,
    name: String,
    index: u32,
    table: u32,
    handle: Handle,
}

impl Device {
    /// Makes the device (up, no routes) in this thread's network namespace.
    pub async fn create(name: &str, table: u32) -> Result<Device, DeviceError> {
        let fd = open_tun(name).map_err(|source| DeviceError::Tun {
            device: name.to_string(),
            source,
        })?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(DeviceError::Netlink)?;
        tokio::spawn(conn);
        let link = handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
            .map_err(|source| DeviceError::Request {
                what: format!("looking up {name}"),
                source,
            })?;
        let index = link
            .map(|l| l.header.index)
            .ok_or_else(|| DeviceError::Tun {
                device: name.to_string(),
                source: std::io::Error::other("made, but not found"),
            })?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| DeviceError::Request {
                what: format!("setting {name} up"),
                source,
            })?;
        Ok(Device {
            _fd: fd,
            name: name.to_string(),
            index,
            table,
            handle,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn route(&self, vip: IpAddr, proto: RouteProtocol) -> RouteMessage {
        match vip {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, 32)
                .output_interface(self.index)
                .table_id(self.table)
                .protocol(proto)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(a, 128)
                .output_interface(self.index)
                .table_id(self.table)
                .protocol(proto)
                .build(),
        }
    }

    /// Adds or replaces the route to `vip`, marked degraded or not.
    pub async fn set(&self, vip: IpAddr, degraded: bool) -> Result<(), DeviceError> {
        let proto = if degraded {
            PROTO_DEGRADED
        } else {
            PROTO_ANNOUNCED
        };
        self.handle
            .route()
            .add(self.route(vip, RouteProtocol::from(proto)))
            .replace()
            .execute()
            .await
            .map_err(|source| DeviceError::Request {
                what: format!("adding the route to {vip} in table {}", self.table),
                source,
            })
    }

    /// Deletes the route to `vip`; a route already gone is not an error.
    pub async fn remove(&self, vip: IpAddr) -> Result<(), DeviceError> {
        match self
            .handle
            .route()
            // Protocol unspecified: the kernel deletes only a route whose protocol matches a
            // non-zero one, and the route may carry either mark.
            .del(self.route(vip, RouteProtocol::Unspec))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
            Err(source) => Err(DeviceError::Request {
                what: format!("deleting the route to {vip} from table {}", self.table),
                source,
            }),
        }
    }
}

/// Opens a TUN device named `name` that the kernel deletes when the last descriptor closes.
fn open_tun(name: &str) -> std::io::Result<OwnedFd> {
    let path = c"/dev/net/tun";
    // SAFETY: a valid NUL-terminated path; the result is checked.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor just opened and owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `ifreq` is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= ifr.ifr_name.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "name too long",
        ));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `ifreq`, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}
