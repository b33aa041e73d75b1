//! Targets given as `host:port`: resolved at start and again every interval, by `tether lb`
//! for its servers and by the on-prem gateway for its exports.
//!
//! Uses hickory's resolver with `/etc/resolv.conf` (or configured name servers), not the
//! libc resolver: lookups are async and the answer is not cached past our interval, so a
//! changed record is seen on the next round. [`Follow`] is the sans-IO part of following
//! one name: which address to use and what an answer changes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

/// The asynchronous resolver [`resolver`] builds.
pub use hickory_resolver::TokioResolver as Resolver;

/// Builds the resolver: the given name servers, else the system's.
pub fn resolver(nameservers: &[SocketAddr]) -> Result<Resolver, String> {
    let mut builder = if nameservers.is_empty() {
        Resolver::builder_tokio().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
    } else {
        let mut config = ResolverConfig::new();
        for ns in nameservers {
            config.add_name_server(NameServerConfig::new(*ns, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*ns, Protocol::Tcp));
        }
        Resolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    // We resolve at our own interval; a cache would hide a change until the record's TTL
    // ends.
    builder.options_mut().cache_size = 0;
    // A dead name server must not stall a round for long: the next round retries anyway.
    builder.options_mut().timeout = Duration::from_secs(2);
    builder.options_mut().attempts = 1;
    Ok(builder.build())
}

/// Resolves one host name to its addresses with `port`, sorted and deduplicated.
pub async fn lookup(resolver: &Resolver, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    // Literal-looking names such as "localhost" come from the hosts file via hickory too.
    let ips = resolver.lookup_ip(host).await.map_err(|e| e.to_string())?;
    let mut addrs: Vec<SocketAddr> = ips
        .iter()
        .map(|ip: IpAddr| SocketAddr::new(ip, port))
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no address".into());
    }
    Ok(addrs)
}

/// A `host:port` target as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPort {
    /// An IP address and port: nothing to resolve.
    Addr(SocketAddr),
    /// A host name to resolve, and the port.
    Name(String, u16),
}

impl HostPort {
    /// Reads `host:port`, `ip:port` or `[ipv6]:port`.
    pub fn parse(text: &str) -> Result<HostPort, String> {
        if let Ok(a) = text.parse::<SocketAddr>() {
            return Ok(HostPort::Addr(a));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains(':') => {
                match port.parse::<u16>() {
                    Ok(p) if p > 0 => Ok(HostPort::Name(host.to_string(), p)),
                    _ => Err(format!("{text:?} has no valid port")),
                }
            }
            _ => Err(format!("{text:?} is not host:port")),
        }
    }
}

/// What one answer changed for a followed name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The address to use is now this one (the first answer, or the old address left it).
    Changed(SocketAddr),
    /// The address in use is still in the answer.
    Same,
    /// The lookup failed: the last good address (if any) is kept.
    Failed {
        /// Whether there is a last good address that is kept.
        kept: bool,
    },
}

/// One followed name (sans-IO): the address in use, or why there is none yet. The shell
/// looks the name up every interval and hands each result to [`Follow::observe`].
///
/// A name with several addresses uses one: the one in use while the answer still holds it
/// (so a rotating answer does not move checks and connections around), else the lowest. A
/// failed lookup keeps the last good address: a name server down for a while must not take
/// a working server away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Follow {
    current: Option<SocketAddr>,
    last_error: Option<String>,
}

impl Follow {
    /// A name not resolved yet.
    pub fn new() -> Follow {
        Follow::default()
    }

    /// The address in use, or why there is none (the last lookup's error, or `not looked
    /// up yet`).
    pub fn target(&self) -> Result<SocketAddr, String> {
        match (self.current, &self.last_error) {
            (Some(a), _) => Ok(a),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err("not looked up yet".into()),
        }
    }

    /// The last lookup's error while lookups fail (also when a last good address is kept).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Takes one lookup's result.
    pub fn observe(&mut self, answer: Result<Vec<SocketAddr>, String>) -> Step {
        match answer {
            Ok(addrs) if !addrs.is_empty() => {
                self.last_error = None;
                if self.current.is_some_and(|c| addrs.contains(&c)) {
                    return Step::Same;
                }
                let first = addrs.iter().min().copied().unwrap_or(addrs[0]);
                self.current = Some(first);
                Step::Changed(first)
            }
            Ok(_) => self.failed("no address".into()),
            Err(e) => self.failed(e),
        }
    }

    fn failed(&mut self, error: String) -> Step {
        self.last_error = Some(error);
        Step::Failed {
            kept: self.current.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_port_tells_addresses_from_names() {
        assert_eq!(
            HostPort::parse("10.0.0.5:5000"),
            Ok(HostPort::Addr(a("10.0.0.5:5000")))
        );
        assert_eq!(
            HostPort::parse("[::1]:80"),
            Ok(HostPort::Addr(a("[::1]:80")))
        );
        assert_eq!(
            HostPort::parse("server-a:5000"),
            Ok(HostPort::Name("server-a".into(), 5000))
        );
        assert!(HostPort::parse("server-a").is_err());
        assert!(HostPort::parse("server-a:0").is_err());
        assert!(HostPort::parse(":80").is_err());
        assert!(HostPort::parse("::1:80").is_err());
    }

    #[test]
    fn an_address_is_kept_while_the_answer_holds_it_and_through_failures() {
        let mut f = Follow::new();
        assert_eq!(f.target(), Err("not looked up yet".into()));
        assert_eq!(
            f.observe(Err("NXDOMAIN".into())),
            Step::Failed { kept: false }
        );
        assert_eq!(f.target(), Err("NXDOMAIN".into()));
        let step = f.observe(Ok(vec![a("192.0.2.2:80"), a("192.0.2.1:80")]));
        assert_eq!(step, Step::Changed(a("192.0.2.1:80")), "the lowest");
        // A rotated answer that still holds it: no move.
        let step = f.observe(Ok(vec![a("192.0.2.3:80"), a("192.0.2.1:80")]));
        assert_eq!(step, Step::Same);
        assert_eq!(
            f.observe(Err("timed out".into())),
            Step::Failed { kept: true }
        );
        assert_eq!(f.target(), Ok(a("192.0.2.1:80")), "the last good address");
        assert_eq!(f.observe(Ok(vec![])), Step::Failed { kept: true });
        let step = f.observe(Ok(vec![a("198.51.100.7:80")]));
        assert_eq!(step, Step::Changed(a("198.51.100.7:80")));
        assert_eq!(f.target(), Ok(a("198.51.100.7:80")));
    }
}
