//! Host names and origins as the guard compares them: the `Host` header against
//! `[server] allowed_hosts`, and the `Origin` header against the bridge's own origin,
//! `[server] allowed_origins` and `[api] cors_origins`.
//!
//! Both are compared after normalisation, never as raw strings: names are lowercased and lose
//! one trailing dot, IP addresses are compared as addresses (`[::ffff:127.0.0.1]` is
//! `127.0.0.1`), and a missing port is the scheme's default (80 for `http`, 443 for
//! `https`), which is how browsers write both headers.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// The longest host name accepted (DNS allows 253 characters).
const MAX_NAME: usize = 253;

/// `http` or `https`: how the request reached the bridge, as far as its own origin goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// Plain HTTP (and `ws://`).
    Http,
    /// HTTP over TLS (and `wss://`).
    Https,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub(crate) fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`, in any case.
    pub(crate) fn parse(text: &str) -> Option<Scheme> {
        if text.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if text.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }
}

/// A host: an IP address or a (lowercased, dot-stripped) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// An IP literal (`127.0.0.1`, `[::1]`), canonical: an IPv4-mapped IPv6 address is IPv4.
    Ip(IpAddr),
    /// A name, lowercased, without a trailing dot.
    Name(Box<str>),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// `host[:port]` as in a `Host` header or a URL: the host, and the port if one is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authority {
    pub(crate) host: Host,
    pub(crate) port: Option<u16>,
}

impl Authority {
    /// Parses `name`, `name:port`, `1.2.3.4[:port]` or `[v6][:port]`. `None` for anything
    /// else: a user part, a path, spaces, an empty host, a port that is not a number.
    pub(crate) fn parse(text: &str) -> Option<Authority> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            let ip: std::net::Ipv6Addr = v6.parse().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (Host::Ip(IpAddr::V6(ip).to_canonical()), port)
        } else {
            let (host, port) = match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            (parse_host(host)?, port)
        };
        let port = match port {
            // `host:` is allowed by RFC 3986 and means the default port.
            None | Some("") => None,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
            Some(_) => return None,
        };
        Some(Authority { host, port })
    }

    /// The authority of a listening socket.
    pub(crate) fn of(addr: SocketAddr) -> Authority {
        Authority {
            host: Host::Ip(addr.ip().to_canonical()),
            port: Some(addr.port()),
        }
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// A host without brackets or port: an IPv4 address or a name of letters, digits, `-`, `_`
/// and dots (lowercased; one trailing dot dropped). IPv6 literals come in brackets only.
fn parse_host(text: &str) -> Option<Host> {
    if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.')
        && !name.contains("..");
    valid.then(|| Host::Name(name.to_ascii_lowercase().into_boxed_str()))
}

/// One entry of `[server] allowed_hosts` (or of the default list).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum HostPattern {
    /// `*`: any `Host`, the check is off.
    Any,
    /// A host, on the given port only, or on any port when none is written.
    Exact(Authority),
    /// Any IP literal on this port: the default for a listener on `0.0.0.0` or `[::]`. Safe
    /// against DNS rebinding, which needs a name the attacker controls; not written in
    /// configuration files.
    AnyIp {
        /// The listener's port.
        port: u16,
    },
}

impl TryFrom<String> for HostPattern {
    type Error = String;

    fn try_from(text: String) -> Result<HostPattern, String> {
        if text == "*" {
            return Ok(HostPattern::Any);
        }
        Authority::parse(&text)
            .map(HostPattern::Exact)
            .ok_or_else(|| {
                format!(
                    "bad host `{text}` in [server] allowed_hosts: a host name or IP address, \
                     with or without :port (IPv6 in brackets), or \"*\""
                )
            })
    }
}

impl HostPattern {
    /// Whether `host` (a request's `Host`, its port already defaulted) matches.
    fn matches(&self, host: &Host, port: u16) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(want) => &want.host == host && want.port.is_none_or(|p| p == port),
            HostPattern::AnyIp { port: want } => matches!(host, Host::Ip(_)) && *want == port,
        }
    }
}

/// The hosts the bridge answers to.
#[derive(Debug, Clone)]
pub(crate) struct AllowedHosts(Vec<HostPattern>);

impl AllowedHosts {
    /// The listen addresses (any IP on the port of an unspecified one), `localhost`,
    /// `127.0.0.1` and `[::1]` on any port, and the configured entries.
    pub(crate) fn new(configured: &[HostPattern], listen: &[SocketAddr]) -> AllowedHosts {
        let mut list: Vec<HostPattern> = listen
            .iter()
            .map(|addr| {
                if addr.ip().is_unspecified() {
                    HostPattern::AnyIp { port: addr.port() }
                } else {
                    HostPattern::Exact(Authority::of(*addr))
                }
            })
            .collect();
        for host in [
            Host::Name("localhost".into()),
            Host::Ip(IpAddr::from([127, 0, 0, 1])),
            Host::Ip(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
        ] {
            list.push(HostPattern::Exact(Authority { host, port: None }));
        }
        list.extend(configured.iter().cloned());
        AllowedHosts(list)
    }

    /// Whether any host is allowed (`"*"`).
    pub(crate) fn any(&self) -> bool {
        self.0.contains(&HostPattern::Any)
    }

    /// Whether a request for `authority` over `scheme` is answered.
    pub(crate) fn allows(&self, authority: &Authority, scheme: Scheme) -> bool {
        let port = authority.port.unwrap_or(scheme.default_port());
        self.0.iter().any(|p| p.matches(&authority.host, port))
    }
}

/// A web origin: `scheme://host[:port]`, as browsers send it in `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Lowercased.
    scheme: Box<str>,
    host: Host,
    /// Explicit, or the default of `http` / `https`; `None` for another scheme without one.
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://authority` (a trailing `/` tolerated, as people write it in files).
    /// `None` for `null`, a path, a user part, or a malformed host.
    pub(crate) fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let valid_scheme = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !valid_scheme {
            return None;
        }
        let authority = Authority::parse(rest.strip_suffix('/').unwrap_or(rest))?;
        let port = authority
            .port
            .or_else(|| Scheme::parse(scheme).map(Scheme::default_port));
        Some(Origin {
            scheme: scheme.to_ascii_lowercase().into_boxed_str(),
            host: authority.host,
            port,
        })
    }

    /// The origin of a page served by this bridge at `authority` over `scheme`.
    pub(crate) fn own(scheme: Scheme, authority: &Authority) -> Origin {
        Origin {
            scheme: scheme.name().into(),
            host: authority.host.clone(),
            port: Some(authority.port.unwrap_or(scheme.default_port())),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) if Scheme::parse(&self.scheme).map(Scheme::default_port) != Some(port) => {
                write!(f, ":{port}")
            }
            _ => Ok(()),
        }
    }
}

/// One entry of `[server] allowed_origins` or `[api] cors_origins`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum OriginPattern {
    /// `*`: every origin.
    Any,
    /// That origin only.
    Exact(Origin),
}

impl TryFrom<String> for OriginPattern {
    type Error = String;

    fn try_from(text: String) -> Result<OriginPattern, String> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        Origin::parse(&text)
            .map(OriginPattern::Exact)
            .ok_or_else(|| {
                format!(
                    "bad origin `{text}`: scheme://host[:port] as browsers send it (e.g. \
                 \"https://app.example\"), or \"*\""
                )
            })
    }
}

/// A list of origins; empty allows none.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins(Vec<OriginPattern>);

impl Origins {
    pub(crate) fn new(list: &[OriginPattern]) -> Origins {
        Origins(list.to_vec())
    }

    /// Whether the raw `Origin` header value `origin` is in the list.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        if self.0.contains(&OriginPattern::Any) {
            return true;
        }
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        self.0
            .iter()
            .any(|p| matches!(p, OriginPattern::Exact(o) if *o == origin))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn authority(text: &str) -> Authority {
        Authority::parse(text).unwrap_or_else(|| panic!("{text} should parse"))
    }

    fn hosts(configured: &[&str], listen: &[&str]) -> AllowedHosts {
        let configured: Vec<HostPattern> = configured
            .iter()
            .map(|h| HostPattern::try_from(h.to_string()).unwrap())
            .collect();
        let listen: Vec<SocketAddr> = listen.iter().map(|a| a.parse().unwrap()).collect();
        AllowedHosts::new(&configured, &listen)
    }

    #[test]
    fn host_headers_are_parsed_and_normalised() {
        assert_eq!(
            authority("Bridge.Example.:8080"),
            Authority {
                host: Host::Name("bridge.example".into()),
                port: Some(8080)
            }
        );
        assert_eq!(authority("127.0.0.1").port, None);
        assert_eq!(authority("example:").port, None);
        assert_eq!(
            authority("[::ffff:127.0.0.1]:1").host,
            Host::Ip(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(authority("[::1]:80").to_string(), "[::1]:80");
        for bad in [
            "",
            ":80",
            "a b",
            "user@host",
            "host/path",
            "host:port",
            "host:99999",
            "[::1",
            "[::1]x",
            "::1",
            ".host",
            "a..b",
            "[nothost]:1",
        ] {
            assert_eq!(Authority::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_default_hosts_are_the_listen_address_and_the_loopback_names() {
        let h = hosts(&[], &["127.0.0.1:8080"]);
        let http = Scheme::Http;
        assert!(h.allows(&authority("127.0.0.1:8080"), http));
        assert!(h.allows(&authority("localhost:9999"), http));
        assert!(h.allows(&authority("LOCALHOST"), http));
        assert!(h.allows(&authority("[::1]:8080"), http));
        assert!(!h.allows(&authority("evil.example:8080"), http));
        assert!(!h.allows(&authority("192.168.1.5:8080"), http));
        assert!(!h.any());
    }

    #[test]
    fn a_listener_on_all_interfaces_allows_ip_literals_on_its_port_but_not_names() {
        let h = hosts(&[], &["0.0.0.0:8080"]);
        assert!(h.allows(&authority("192.168.1.5:8080"), Scheme::Http));
        assert!(h.allows(&authority("[fe80::1]:8080"), Scheme::Http));
        assert!(!h.allows(&authority("192.168.1.5:8081"), Scheme::Http));
        assert!(!h.allows(&authority("rebind.evil.example:8080"), Scheme::Http));
    }

    #[test]
    fn configured_hosts_match_any_port_without_one_and_the_default_port_with_one() {
        let h = hosts(&["bridge.example", "api.example:443"], &["127.0.0.1:8080"]);
        assert!(h.allows(&authority("bridge.example:1234"), Scheme::Http));
        assert!(h.allows(&authority("api.example"), Scheme::Https));
        assert!(!h.allows(&authority("api.example"), Scheme::Http));
        assert!(h.allows(&authority("127.0.0.1:8080"), Scheme::Http));
        assert!(hosts(&["*"], &[]).allows(&authority("anything"), Scheme::Http));
        assert!(HostPattern::try_from("a b".to_owned()).is_err());
    }

    #[test]
    fn origins_compare_by_scheme_host_and_effective_port() {
        let own = Origin::own(Scheme::Http, &authority("127.0.0.1:8080"));
        assert_eq!(Origin::parse("http://127.0.0.1:8080"), Some(own.clone()));
        assert_ne!(Origin::parse("https://127.0.0.1:8080"), Some(own.clone()));
        assert_ne!(Origin::parse("http://localhost:8080"), Some(own));
        let own = Origin::own(Scheme::Https, &authority("Bridge.example"));
        assert_eq!(
            Origin::parse("https://bridge.example:443"),
            Some(own.clone())
        );
        assert_eq!(own.to_string(), "https://bridge.example");
        for bad in [
            "null",
            "http://",
            "http://a/b",
            "//a",
            "http://u@a",
            "ht tp://a",
        ] {
            assert_eq!(Origin::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_origin_list_allows_its_entries_or_everything_with_a_star() {
        let parse = |list: &[&str]| -> Origins {
            Origins::new(
                &list
                    .iter()
                    .map(|o| OriginPattern::try_from(o.to_string()).unwrap())
                    .collect::<Vec<_>>(),
            )
        };
        let list = parse(&["https://app.example/"]);
        assert!(list.allows("https://app.example"));
        assert!(list.allows("https://APP.example:443"));
        assert!(!list.allows("http://app.example"));
        assert!(!list.allows("null"));
        assert!(parse(&["*"]).allows("null"));
        assert!(!parse(&[]).allows("https://app.example"));
        assert!(OriginPattern::try_from("app.example".to_owned()).is_err());
    }
}
