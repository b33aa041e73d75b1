//! Resolving `host:port` server addresses, at start and again every `resolve_interval`.
//!
//! Uses hickory's resolver with `/etc/resolv.conf` (or the `[resolver]` name servers), not
//! the libc resolver: lookups are async and the answer is not cached past our interval, so
//! a changed record is seen on the next round.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

use crate::config::{Config, ServerAddress};

/// Host names and ports to resolve, and their last good answers (sorted, deduplicated).
pub type Answers = BTreeMap<(String, u16), Vec<SocketAddr>>;

/// Builds the resolver: the configured name servers, else the system's.
pub fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
    } else {
        let mut config = ResolverConfig::new();
        for ns in nameservers {
            config.add_name_server(NameServerConfig::new(*ns, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*ns, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    // We poll at our own interval; a cache would hide a change until the record's TTL ends.
    builder.options_mut().cache_size = 0;
    // A dead name server must not stall a round for long: the next round retries anyway.
    builder.options_mut().timeout = std::time::Duration::from_secs(2);
    builder.options_mut().attempts = 1;
    Ok(builder.build())
}

/// Every `host:port` server address of a configuration.
pub fn hosts(config: &Config) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = config
        .backends
        .iter()
        .flat_map(|b| b.servers.iter())
        .filter_map(|s| match &s.address {
            ServerAddress::Host(h, p) => Some((h.clone(), *p)),
            ServerAddress::Ip(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Resolves one host name to its addresses with `port`, sorted.
pub async fn lookup(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
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

/// The runtime servers a configured server expands to: one for an IP address; for a host
/// name, one per address, named `name` when there is a single address and `name@ip`
/// otherwise.
pub fn expand(name: &str, address: &ServerAddress, answers: &Answers) -> Vec<(String, SocketAddr)> {
    match address {
        ServerAddress::Ip(a) => vec![(name.to_string(), *a)],
        ServerAddress::Host(h, p) => match answers.get(&(h.clone(), *p)) {
            None => Vec::new(),
            Some(addrs) if addrs.len() == 1 => vec![(name.to_string(), addrs[0])],
            Some(addrs) => addrs
                .iter()
                .map(|a| (format!("{name}@{}", a.ip()), *a))
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_names_servers_by_address_only_when_there_are_several() {
        let host = ServerAddress::Host("db.example.com".into(), 5432);
        let mut answers = Answers::new();
        assert!(expand("db", &host, &answers).is_empty());
        answers.insert(
            ("db.example.com".into(), 5432),
            vec!["192.0.2.1:5432".parse().unwrap()],
        );
        assert_eq!(
            expand("db", &host, &answers),
            [("db".to_string(), "192.0.2.1:5432".parse().unwrap())]
        );
        answers.insert(
            ("db.example.com".into(), 5432),
            vec![
                "192.0.2.1:5432".parse().unwrap(),
                "192.0.2.2:5432".parse().unwrap(),
            ],
        );
        let names: Vec<String> = expand("db", &host, &answers)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["db@192.0.2.1", "db@192.0.2.2"]);
        let ip = ServerAddress::Ip("198.51.100.1:80".parse().unwrap());
        assert_eq!(expand("web", &ip, &answers).len(), 1);
    }
}
