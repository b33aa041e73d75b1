//! IPv4 prefixes, restricted to the documentation ranges (RFC 5737).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::LabError;

/// The only IPv6 range a lab may use: 2001:db8::/32 (RFC 3849).
pub const DOCUMENTATION_RANGE_V6: (Ipv6Addr, u8) =
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32);

/// An IPv6 network of a lab: a /64 inside 2001:db8::/32, hosts numbered like on IPv4
/// (host 7 is `<prefix>::7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr6 {
    /// The network address (host bits zero).
    pub base: Ipv6Addr,
}

impl Cidr6 {
    /// Parses `2001:db8:x:y::/64`; anything but a /64 inside 2001:db8::/32 is refused.
    pub fn parse(s: &str) -> Result<Cidr6, LabError> {
        let bad = || LabError::BadCidr(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let base: Ipv6Addr = a.parse().map_err(|_| bad())?;
        if l != "64" || u128::from(base) & u128::from(u64::MAX) != 0 {
            return Err(bad());
        }
        let (doc, len) = DOCUMENTATION_RANGE_V6;
        if u128::from(base) >> (128 - len) != u128::from(doc) >> (128 - len) {
            return Err(LabError::NotDocumentation(s.to_string()));
        }
        Ok(Cidr6 { base })
    }

    /// The address of host number `octet` (`<prefix>::<octet>`, written in decimal digits
    /// as in the IPv4 network: host 10 is `::10`, so both families read alike).
    pub fn host(&self, octet: u8) -> Ipv6Addr {
        let digits = u128::from_str_radix(&octet.to_string(), 16).unwrap_or(0);
        Ipv6Addr::from(u128::from(self.base) | digits)
    }
}

impl std::fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/64", self.base)
    }
}

/// The only IPv4 ranges a lab may use: TEST-NET-1, -2 and -3 (RFC 5737).
pub const DOCUMENTATION_RANGES: [(Ipv4Addr, u8); 3] = [
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
];

/// An IPv4 network: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub base: Ipv4Addr,
    /// The prefix length.
    pub len: u8,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl Cidr {
    /// Parses `a.b.c.d/len` and checks it lies inside a documentation range.
    pub fn parse(s: &str) -> Result<Cidr, LabError> {
        let bad = || LabError::BadCidr(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let base: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let c = Cidr {
            base: Ipv4Addr::from(u32::from(base) & mask(len)),
            len,
        };
        if !c.is_documentation() {
            return Err(LabError::NotDocumentation(s.to_string()));
        }
        Ok(c)
    }

    /// Whether the whole prefix lies inside one documentation range.
    pub fn is_documentation(&self) -> bool {
        DOCUMENTATION_RANGES.iter().any(|(net, len)| {
            self.len >= *len && u32::from(self.base) & mask(*len) == u32::from(*net)
        })
    }

    /// Whether `a` is inside this prefix.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.len) == u32::from(self.base)
    }

    /// The address of host number `octet` in this network (1..broadcast-1).
    pub fn host(&self, octet: u8) -> Result<Ipv4Addr, LabError> {
        let size = 1u64 << (32 - u32::from(self.len));
        if octet == 0 || u64::from(octet) >= size - 1 {
            return Err(LabError::Spec(format!(
                "host number {octet} does not fit in {self} (1..={})",
                size.saturating_sub(2)
            )));
        }
        Ok(Ipv4Addr::from(u32::from(self.base) + u32::from(octet)))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_documentation_ranges() {
        for ok in [
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "192.0.2.64/26",
        ] {
            assert!(Cidr::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.0/24",
            "192.168.1.0/24",
            "192.0.2.0/23",
            "203.0.112.0/24",
            "0.0.0.0/0",
        ] {
            assert!(
                matches!(Cidr::parse(bad), Err(LabError::NotDocumentation(_))),
                "{bad}"
            );
        }
        for junk in ["192.0.2.0", "192.0.2.0/33", "x/24", "192.0.2.0/"] {
            assert!(
                matches!(Cidr::parse(junk), Err(LabError::BadCidr(_))),
                "{junk}"
            );
        }
    }

    #[test]
    fn ipv6_networks_are_64s_inside_2001_db8_and_hosts_read_like_their_ipv4_octet() {
        let c = Cidr6::parse("2001:db8::/64").unwrap();
        assert_eq!(c.host(10), "2001:db8::10".parse::<Ipv6Addr>().unwrap());
        assert_eq!(c.host(1).to_string(), "2001:db8::1");
        assert!(Cidr6::parse("2001:db8:5:6::/64").is_ok());
        for bad in ["2001:db9::/64", "fd00::/64", "::/64"] {
            assert!(
                matches!(Cidr6::parse(bad), Err(LabError::NotDocumentation(_))),
                "{bad}"
            );
        }
        for junk in ["2001:db8::/48", "2001:db8::1/64", "2001:db8::", "x/64"] {
            assert!(
                matches!(Cidr6::parse(junk), Err(LabError::BadCidr(_))),
                "{junk}"
            );
        }
    }

    #[test]
    fn host_numbers_stay_inside_the_prefix() {
        let c = Cidr::parse("192.0.2.5/24").unwrap();
        assert_eq!(c.base, Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(c.host(1).unwrap(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(c.host(254).unwrap(), Ipv4Addr::new(192, 0, 2, 254));
        assert!(c.host(0).is_err());
        assert!(c.host(255).is_err());
        let small = Cidr::parse("203.0.113.8/30").unwrap();
        assert_eq!(small.host(2).unwrap(), Ipv4Addr::new(203, 0, 113, 10));
        assert!(small.host(3).is_err());
        assert!(small.contains(Ipv4Addr::new(203, 0, 113, 11)));
        assert!(!small.contains(Ipv4Addr::new(203, 0, 113, 12)));
    }
}
