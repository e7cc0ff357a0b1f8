//! The client's real address behind a reverse proxy: `[server] trusted_proxies`, and the
//! `X-Forwarded-For` / `Forwarded` headers read only from them.
//!
//! Anyone can send these headers, so they are read only when the TCP peer is a trusted
//! proxy, and then only as far back as the chain stays trusted: the client is the right-most
//! address that is not itself a trusted proxy (a client can put any address at the left of
//! the list; the proxies append on the right). When every address is trusted, the left-most
//! one is the client. `X-Forwarded-For` is read when present, `Forwarded: for=` (RFC 7239)
//! only when there is no `X-Forwarded-For`: the proxy must set (or overwrite) the header it
//! uses, or a client could send the other one itself. An entry that is not an IP address
//! (`unknown`, an obfuscated `_name`, garbage) where the walk stops is refused: the client is
//! unknown, and guessing would be a way in. The port is the header's when it gives one,
//! else 0.
//!
//! From a trusted proxy `X-Forwarded-Proto` (or `Forwarded: proto=`) also says whether the
//! browser used `https`, which the own-origin checks need behind a TLS-terminating proxy.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use serde::Deserialize;

use super::names::Scheme;

/// An IP address or a CIDR block of `[server] trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct ProxyNet {
    /// Canonical, with the host bits cleared.
    addr: IpAddr,
    /// Leading bits that must match: 0..=32 for IPv4, 0..=128 for IPv6.
    prefix: u8,
}

impl TryFrom<String> for ProxyNet {
    type Error = String;

    fn try_from(text: String) -> Result<ProxyNet, String> {
        let bad = || {
            format!(
                "bad entry `{text}` in [server] trusted_proxies: an IP address or a CIDR block \
                 (\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\")"
            )
        };
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text.as_str(), None),
        };
        let addr = ip.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // `u8::parse` would take "+8".
            Some(bits) if !bits.bytes().all(|b| b.is_ascii_digit()) => return Err(bad()),
            Some(bits) => match bits.parse::<u8>() {
                Ok(bits) if bits <= max => bits,
                _ => return Err(bad()),
            },
        };
        Ok(ProxyNet {
            addr: mask(addr, prefix),
            prefix,
        })
    }
}

/// `ip` with all but its first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

impl ProxyNet {
    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

/// Why the forwarded client address cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a trusted proxy forwarded a client address that is not an IP address")]
pub(crate) struct Unreadable;

/// Who sent a request, as far as the bridge can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    /// The client's address: the TCP peer, or the one a trusted proxy forwarded.
    pub(crate) addr: SocketAddr,
    /// The TCP peer, when it is a trusted proxy that forwarded the request.
    pub(crate) proxy: Option<SocketAddr>,
    /// The scheme the proxy says the browser used, if it said.
    pub(crate) proto: Option<Scheme>,
}

/// The `[server] trusted_proxies` list.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<ProxyNet>);

impl TrustedProxies {
    pub(crate) fn new(list: &[ProxyNet]) -> TrustedProxies {
        TrustedProxies(list.to_vec())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client of a request from `peer` with `headers` (see the module docs).
    pub(crate) fn client(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<Client, Unreadable> {
        let direct = Client {
            addr: peer,
            proxy: None,
            proto: None,
        };
        if !self.trusts(peer.ip()) {
            return Ok(direct);
        }
        let xff: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let forwarded: Vec<&str> = headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let entries: Vec<&str> = if !xff.is_empty() {
            xff.iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect()
        } else {
            forwarded
                .iter()
                .flat_map(|v| v.split(','))
                .map(|element| param(element, "for").unwrap_or(""))
                .collect()
        };
        let proto = headers
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .or_else(|| {
                forwarded
                    .iter()
                    .flat_map(|v| v.split(','))
                    .filter_map(|element| param(element, "proto"))
                    .next_back()
            })
            .and_then(|p| Scheme::parse(p.trim()));
        let Some(addr) = self.walk(&entries)? else {
            return Ok(Client { proto, ..direct });
        };
        Ok(Client {
            addr,
            proxy: Some(peer),
            proto,
        })
    }

    /// The client among the forwarded `entries` (left to right as sent); `None` when there
    /// are none.
    fn walk(&self, entries: &[&str]) -> Result<Option<SocketAddr>, Unreadable> {
        let mut client = None;
        for entry in entries.iter().rev() {
            let addr = parse_node(entry).ok_or(Unreadable)?;
            client = Some(addr);
            if !self.trusts(addr.ip()) {
                break;
            }
        }
        Ok(client)
    }
}

/// The value of `name=` in one `Forwarded` element (`for=1.2.3.4;proto=https`), unquoted.
fn param<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case(name) {
            return None;
        }
        let value = value.trim();
        Some(
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value),
        )
    })
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:5678`; a
/// port that is not a number (RFC 7239's obfuscated `_port`) counts as none.
fn parse_node(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), 0));
    }
    let (ip, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        (ip, after.strip_prefix(':'))
    } else {
        let (ip, port) = text.rsplit_once(':')?;
        (ip, Some(port))
    };
    let ip = ip.parse::<IpAddr>().ok()?.to_canonical();
    let port = port.and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            &list
                .iter()
                .map(|p| ProxyNet::try_from(p.to_string()).unwrap())
                .collect::<Vec<_>>(),
        )
    }

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidr_entries_are_parsed_and_matched() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(p.trusts("10.200.3.4".parse().unwrap()));
        assert!(p.trusts("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!p.trusts("11.0.0.1".parse().unwrap()));
        assert!(p.trusts("192.168.1.7".parse().unwrap()));
        assert!(!p.trusts("192.168.1.8".parse().unwrap()));
        assert!(p.trusts("fd12::1".parse().unwrap()));
        assert!(!p.trusts("fe80::1".parse().unwrap()));
        assert!(proxies(&["0.0.0.0/0"]).trusts("8.8.8.8".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host",
            "10.0.0/8",
        ] {
            assert!(ProxyNet::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = p.client(addr("127.0.0.1:5000"), &h).unwrap();
        assert_eq!(c.addr, addr("127.0.0.1:5000"));
        assert_eq!((c.proxy, c.proto), (None, None));
    }

    #[test]
    fn the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = addr("127.0.0.1:5000");
        // The client claims 1.1.1.1; the outer proxy saw 203.0.113.7; an inner proxy 10.1.2.3.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("x-forwarded-for", "10.1.2.3"),
        ]);
        let c = p.client(peer, &h).unwrap();
        assert_eq!(c.addr, addr("203.0.113.7:0"));
        assert_eq!(c.proxy, Some(peer));
        // All trusted: the left-most.
        let h = headers(&[("x-forwarded-for", "10.9.9.9:7, 10.1.2.3")]);
        assert_eq!(p.client(peer, &h).unwrap().addr, addr("10.9.9.9:7"));
        // No header: the peer itself.
        assert_eq!(p.client(peer, &HeaderMap::new()).unwrap().addr, peer);
    }

    #[test]
    fn rfc_7239_forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let p = proxies(&["127.0.0.1"]);
        let peer = addr("127.0.0.1:5000");
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, For=\"[2001:db8:cafe::17]:4711\";proto=https",
        )]);
        let c = p.client(peer, &h).unwrap();
        assert_eq!(c.addr, addr("[2001:db8:cafe::17]:4711"));
        assert_eq!(c.proto, Some(Scheme::Https));
        let h = headers(&[
            ("forwarded", "for=192.0.2.60"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(p.client(peer, &h).unwrap().addr, addr("198.51.100.1:0"));
    }

    #[test]
    fn an_unreadable_client_address_is_refused_rather_than_guessed() {
        let p = proxies(&["127.0.0.1"]);
        let peer = addr("127.0.0.1:5000");
        for h in [
            headers(&[("x-forwarded-for", "203.0.113.7, garbage")]),
            headers(&[("forwarded", "for=unknown")]),
            headers(&[("forwarded", "proto=https")]),
            headers(&[("x-forwarded-for", "")]),
        ] {
            assert_eq!(p.client(peer, &h), Err(Unreadable), "{h:?}");
        }
        // Garbage left of the client does not matter.
        let h = headers(&[("x-forwarded-for", "garbage, 203.0.113.7")]);
        assert_eq!(p.client(peer, &h).unwrap().addr, addr("203.0.113.7:0"));
    }

    #[test]
    fn the_forwarded_scheme_is_read_from_the_proxy() {
        let p = proxies(&["127.0.0.1"]);
        let peer = addr("127.0.0.1:5000");
        let h = headers(&[("x-forwarded-proto", "HTTPS")]);
        let c = p.client(peer, &h).unwrap();
        assert_eq!((c.addr, c.proto), (peer, Some(Scheme::Https)));
        let h = headers(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(p.client(peer, &h).unwrap().proto, None);
    }
}
