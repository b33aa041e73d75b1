//! Whether an accepted client is still there, asked of its socket before a server
//! connection is opened for it.
//!
//! A client that reset while it waited in the listen backlog (or at `maxconn`) is accepted
//! like any other; connecting to a server for it only loads the server, and a burst of
//! them once took healthy servers out. One `poll(2)` with a zero timeout answers it.

use std::os::fd::AsRawFd;

use tokio::net::TcpStream;

/// What the socket says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// It may still send or read.
    Here,
    /// Reset, or closed both ways: nobody to serve.
    Gone,
    /// Closed its sending side with nothing left to read (it may still read).
    Finished,
}

/// Asks the socket, without blocking, whether the client reset or closed.
pub fn peer_state(stream: &TcpStream) -> Peer {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd we own, a zero timeout.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 1 {
        return Peer::Here;
    }
    if pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        return Peer::Gone;
    }
    if pfd.revents & libc::POLLRDHUP == 0 {
        return Peer::Here;
    }
    // The end of stream is pending: finished only if no data comes before it.
    let mut byte = [0u8; 1];
    // SAFETY: a one-byte buffer we own; MSG_PEEK leaves the data for the relay.
    let n = unsafe {
        libc::recv(
            pfd.fd,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == 0 { Peer::Finished } else { Peer::Here }
}

/// Whether the client has sent, closed or reset since it was last read: something a read
/// would return now. Asked of the socket without blocking.
pub fn pending(stream: &TcpStream) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd we own, a zero timeout.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    async fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    /// Waits until the socket reports something other than `Here` (bounded).
    async fn settled(s: &TcpStream) -> Peer {
        let _ = tokio::time::timeout(Duration::from_secs(5), s.readable()).await;
        peer_state(s)
    }

    #[tokio::test]
    async fn pending_sees_data_a_close_and_a_reset_but_not_silence() {
        let (mut c, s) = pair().await;
        assert!(!pending(&s));
        c.write_all(b"x").unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.readable()).await;
        assert!(pending(&s));

        let (c, s) = pair().await;
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.readable()).await;
        assert!(pending(&s));

        let (c, s) = pair().await;
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
        let _ = tokio::time::timeout(Duration::from_secs(5), s.readable()).await;
        assert!(pending(&s));
    }

    #[tokio::test]
    async fn a_reset_client_is_gone_and_a_closed_one_finished_unless_it_sent_data() {
        let (c, s) = pair().await;
        assert_eq!(peer_state(&s), Peer::Here);
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
        assert_eq!(settled(&s).await, Peer::Gone);

        let (c, s) = pair().await;
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(settled(&s).await, Peer::Finished);

        let (mut c, s) = pair().await;
        c.write_all(b"GET /\n").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(settled(&s).await, Peer::Here);
    }
}
