//! Which peers may connect: a list of networks (`ADDR/PREFIX` or a single
//! address), as `--allow` and the ZooKeeper property `allow` give it.

use std::fmt;
use std::net::IpAddr;

/// One network: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A non-empty list of networks; a peer in any of them is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Vec<Net>);

/// An IPv4 peer on a dual-stack socket shows as `::ffff:a.b.c.d`.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl AllowList {
    /// Whether `ip` is in one of the networks.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        self.0.iter().any(|n| n.contains(ip))
    }
}

impl std::str::FromStr for AllowList {
    type Err = String;

    /// `ADDR[/PREFIX][,ADDR[/PREFIX]…]`, spaces allowed around commas.
    fn from_str(s: &str) -> Result<AllowList, String> {
        let mut nets = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an address or ADDR/PREFIX"))?;
            let addr = unmapped(addr);
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|&p| p <= max)
                    .ok_or_else(|| format!("{item:?}: the prefix must be 0 to {max}"))?,
            };
            nets.push(Net { addr, prefix });
        }
        if nets.is_empty() {
            return Err("an empty list would refuse every peer".into());
        }
        Ok(AllowList(nets))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}/{}", n.addr, n.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_and_single_addresses() {
        let l: AllowList = "10.0.0.0/8, 192.168.1.7,fd00::/8".parse().unwrap();
        assert!(l.permits(ip("10.1.2.3")));
        assert!(l.permits(ip("::ffff:10.1.2.3")));
        assert!(!l.permits(ip("11.0.0.1")));
        assert!(l.permits(ip("192.168.1.7")));
        assert!(!l.permits(ip("192.168.1.8")));
        assert!(l.permits(ip("fd12::1")));
        assert!(!l.permits(ip("fe80::1")));
        assert!(!l.permits(ip("127.0.0.1")));
        assert_eq!(l.to_string(), "10.0.0.0/8,192.168.1.7/32,fd00::/8");
        let all: AllowList = "0.0.0.0/0,::/0".parse().unwrap();
        assert!(all.permits(ip("8.8.8.8")) && all.permits(ip("2001:db8::1")));
        let one: AllowList = "127.0.0.1/32".parse().unwrap();
        assert!(one.permits(ip("127.0.0.1")) && !one.permits(ip("127.0.0.2")));
    }

    #[test]
    fn bad_lists_say_why() {
        for (s, why) in [
            ("", "empty"),
            (" , ", "empty"),
            ("10.0.0.0/33", "prefix must be 0 to 32"),
            ("::/129", "prefix must be 0 to 128"),
            ("10.0.0.0/x", "prefix"),
            ("example.com", "not an address"),
            ("10.0.0.0/8/9", "prefix"),
        ] {
            let e = s.parse::<AllowList>().unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }
}
