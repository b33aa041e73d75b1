//! Linux sockets for VRRP: raw IP protocol 112 for adverts, TTL 255 sent
//! and checked, multicast membership or unicast; an `AF_PACKET` socket for gratuitous ARP
//! and unsolicited NA frames. Thin: all parsing lives in [`crate::packet`].

use std::io::{self, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt, sockopt};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::packet::{self, DropReason, IPPROTO_VRRP, MCAST_V4, MCAST_V6, Received, VRRP_TTL};

/// Receives adverts on one interface (multicast group joined unless unicast).
pub struct RxSocket {
    fd: AsyncFd<Socket>,
    v6: bool,
}

/// Sends adverts from a pinned source address.
pub struct TxSocket {
    sock: Socket,
}

fn raw(v6: bool) -> io::Result<Socket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    Socket::new(
        domain,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )
}

impl RxSocket {
    /// Opens the receive socket on `iface`; `multicast` joins 224.0.0.18 / ff02::12.
    pub fn open(iface: &str, ifindex: u32, v6: bool, multicast: bool) -> io::Result<RxSocket> {
        let s = raw(v6)?;
        s.bind_device(Some(iface.as_bytes()))?;
        if v6 {
            // Not IPV6_CHECKSUM: the kernel would drop bad sums before we can count them.
            setsockopt(&s.as_fd(), sockopt::Ipv6RecvHopLimit, &true)?;
            setsockopt(&s.as_fd(), sockopt::Ipv6RecvPacketInfo, &true)?;
            if multicast {
                s.join_multicast_v6(&MCAST_V6, ifindex)?;
                s.set_multicast_all_v6(false)?;
            }
        } else if multicast {
            s.join_multicast_v4_n(&MCAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
            s.set_multicast_all_v4(false)?;
        }
        s.set_nonblocking(true)?;
        // SAFETY: the socket is owned by the AsyncFd from here on and its descriptor is
        // never closed or handed out elsewhere while registered.
        let fd = unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(RxSocket { fd, v6 })
    }

    /// Waits for the next packet and decodes it (codec-level checks only).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Result<Received, DropReason>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|inner| {
                if self.v6 {
                    recv_v6(inner.get_ref(), buf)
                } else {
                    let mut sock: &Socket = inner.get_ref();
                    let n = sock.read(buf)?;
                    Ok(packet::decode_ipv4(&buf[..n]))
                }
            });
            match r {
                Ok(res) => return res,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_v6(s: &Socket, buf: &mut [u8]) -> io::Result<Result<Received, DropReason>> {
    let mut cmsg = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let n = msg.bytes;
    let src = msg.address.map(|a| IpAddr::V6(a.ip()));
    let mut hops = None;
    let mut dst = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).ok(),
            ControlMessageOwned::Ipv6PacketInfo(p) => {
                dst = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)))
            }
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(hops)) = (src, dst, hops) else {
        return Ok(Err(DropReason::BadIpHeader));
    };
    Ok(packet::decode_vrrp(&buf[..n], src, dst, hops))
}

impl TxSocket {
    /// Opens a send socket on `iface` whose packets leave from `src` with TTL/hop limit 255
    /// and traffic class CS6, as keepalived's do.
    pub fn open(iface: &str, ifindex: u32, src: IpAddr) -> io::Result<TxSocket> {
        let s = raw(src.is_ipv6())?;
        s.bind_device(Some(iface.as_bytes()))?;
        match src {
            IpAddr::V4(a) => {
                s.bind(&SocketAddr::new(src, 0).into())?;
                s.set_multicast_if_v4(&a)?;
                s.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_ttl_v4(u32::from(VRRP_TTL))?;
                s.set_tos_v4(0xc0)?;
                s.set_multicast_loop_v4(false)?;
            }
            IpAddr::V6(a) => {
                let scope = if crate::netlink::is_link_local(a) {
                    ifindex
                } else {
                    0
                };
                s.bind(&SocketAddr::V6(SocketAddrV6::new(a, 0, 0, scope)).into())?;
                s.set_multicast_if_v6(ifindex)?;
                s.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
                s.set_tclass_v6(0xc0)?;
                s.set_multicast_loop_v6(false)?;
            }
        }
        // This socket only sends; keep whatever the kernel queues to it small.
        s.set_recv_buffer_size(1)?;
        s.set_nonblocking(true)?;
        Ok(TxSocket { sock: s })
    }

    /// Sends one VRRP message to `dst` (the group or a unicast peer).
    pub fn send(&self, msg: &[u8], dst: IpAddr, ifindex: u32) -> io::Result<()> {
        let to = match dst {
            IpAddr::V4(_) => SocketAddr::new(dst, 0),
            IpAddr::V6(a) => {
                let scope = if a.is_multicast() || crate::netlink::is_link_local(a) {
                    ifindex
                } else {
                    0
                };
                SocketAddr::V6(SocketAddrV6::new(a, 0, 0, scope))
            }
        };
        self.sock.send_to(msg, &to.into()).map(|_| ())
    }
}

/// An `AF_PACKET` socket that sends whole Ethernet frames (GARP, unsolicited NA).
pub struct FrameSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl FrameSocket {
    /// Opens a send-only packet socket for `ifindex` (protocol 0: it receives nothing).
    pub fn open(ifindex: u32) -> io::Result<FrameSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use and owned after.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(FrameSocket { fd, ifindex })
    }

    /// Sends one frame; the destination MAC is taken from the frame's first six bytes.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame too short",
            ));
        }
        let mut sll: libc::sockaddr_ll = unsafe_zeroed_sll();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        sll.sll_ifindex = i32::try_from(self.ifindex).unwrap_or(0);
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: buffer and address point to live memory of the stated lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn unsafe_zeroed_sll() -> libc::sockaddr_ll {
    let z = MaybeUninit::<libc::sockaddr_ll>::zeroed();
    // SAFETY: sockaddr_ll is plain old data for which all-zero bytes are valid.
    unsafe { z.assume_init() }
}
