//! Resolving `host:port` server addresses, at start and again every `resolve_interval`.
//!
//! The resolver and the lookup are tether-health's ([`tether_health::resolve`]), shared with
//! the gateway's exports: hickory with `/etc/resolv.conf` (or the `[resolver]` name
//! servers), async and not cached past our interval, so a changed record is seen on the
//! next round.

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use tether_health::resolve::{lookup, resolver};

use crate::config::{Config, ServerAddress};

/// Host names and ports to resolve, and their last good answers (sorted, deduplicated).
pub type Answers = BTreeMap<(String, u16), Vec<SocketAddr>>;

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
