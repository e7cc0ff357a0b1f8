//! The `[cluster]` table of the bridge's configuration file.

use std::path::PathBuf;

use serde::Deserialize;

/// `[cluster]`: the NATS JetStream cluster this bridge joins, and how.
///
/// ```toml
/// [cluster]
/// nats_url = "nats://10.0.0.1:4222,nats://10.0.0.2:4222"   # or a list of strings
/// node = "bridge-a"        # unique per bridge
/// replicas = 3             # of the JetStream streams this creates
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS servers: one URL, several separated by commas, or a list. The client
    /// connects to one and learns the others from it.
    pub nats_url: Urls,
    /// This bridge's name in the cluster: unique per bridge (default: the host name).
    pub node: String,
    /// Replicas of each JetStream stream this bridge creates (1 to 5; 3 survives the loss
    /// of one NATS server). Streams that exist are used as they are.
    pub replicas: usize,
    /// Prefix of every subject, stream and bucket this bridge uses (lower case letters,
    /// digits and `-`): several independent brokers can share one NATS cluster.
    pub namespace: String,
    /// At most this many bytes in the message stream; the oldest go first beyond it.
    pub max_stream_bytes: u64,
    /// How long a publish may wait for JetStream's acknowledgement before the batch it
    /// belongs to fails (its PUBACKs are not sent, its connections are closed).
    pub ack_timeout_ms: u64,
    /// A NATS credentials file (JWT and NKey seed), as `nats` tools take.
    pub credentials_file: Option<PathBuf>,
    /// A NATS user name (with `password`).
    pub user: Option<String>,
    /// The password of `user`.
    pub password: Option<String>,
    /// A NATS authentication token.
    pub token: Option<String>,
    /// PEM file of the CAs that sign the NATS servers' certificates (turns TLS on).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM certificate this bridge presents to NATS (with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a NATS server that does not offer TLS.
    pub tls_required: bool,
}

/// One URL, several separated by commas, or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// `"nats://a:4222,nats://b:4222"`.
    One(String),
    /// `["nats://a:4222", "nats://b:4222"]`.
    List(Vec<String>),
}

impl Urls {
    /// Every URL, trimmed, empty ones left out.
    pub fn list(&self) -> Vec<String> {
        let all: Vec<&str> = match self {
            Urls::One(s) => s.split(',').collect(),
            Urls::List(l) => l.iter().flat_map(|s| s.split(',')).collect(),
        };
        all.into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: Urls::One(String::new()),
            node: default_node(),
            replicas: 3,
            namespace: "mqtt".into(),
            max_stream_bytes: 1 << 30,
            ack_timeout_ms: 5_000,
            credentials_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

/// The host name, or `bridge` if it cannot be read.
fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bridge".into())
}

impl ClusterConfig {
    /// A cluster at `url` with every other setting at its default (`--cluster URL`).
    pub fn at(url: &str) -> ClusterConfig {
        ClusterConfig {
            nats_url: Urls::One(url.to_owned()),
            ..ClusterConfig::default()
        }
    }

    /// Refuses values that cannot work, with the reason.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.nats_url.list().is_empty() {
            return Err("[cluster] nats_url is empty: give at least one nats:// URL");
        }
        if self.node.is_empty()
            || !self
                .node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("[cluster] node must be letters, digits, `-` and `_`");
        }
        if !(1..=5).contains(&self.replicas) {
            return Err("[cluster] replicas must be 1 to 5");
        }
        if self.namespace.is_empty()
            || self.namespace.len() > 32
            || !self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            // No `_`: stream names spell `-` as `_`, and `a-b` and `a_b` would share them.
            return Err("[cluster] namespace must be 1 to 32 lower case letters, digits and `-`");
        }
        if self.max_stream_bytes < 1 << 20 {
            return Err("[cluster] max_stream_bytes must be at least 1 MiB");
        }
        if self.ack_timeout_ms == 0 {
            return Err("[cluster] ack_timeout_ms must be above 0");
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err("[cluster] tls_cert_file and tls_key_file go together");
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("[cluster] user and password go together");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn urls_are_one_string_a_comma_list_or_an_array() {
        let one = parse("nats_url = \"nats://a:4222\"").expect("parses");
        assert_eq!(one.nats_url.list(), ["nats://a:4222"]);
        let commas = parse("nats_url = \"nats://a:4222, nats://b:4222\"").expect("parses");
        assert_eq!(commas.nats_url.list(), ["nats://a:4222", "nats://b:4222"]);
        let list = parse("nats_url = [\"nats://a:4222\", \"nats://b:4222\"]").expect("parses");
        assert_eq!(list.nats_url.list(), ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(list.replicas, 3);
        assert_eq!(list.namespace, "mqtt");
        assert!(list.check().is_ok());
    }

    #[test]
    fn values_that_cannot_work_are_refused() {
        for bad in [
            "nats_url = \"\"",
            "nats_url = \"nats://a\"\nreplicas = 0",
            "nats_url = \"nats://a\"\nreplicas = 6",
            "nats_url = \"nats://a\"\nnode = \"a.b\"",
            "nats_url = \"nats://a\"\nnamespace = \"Mqtt\"",
            "nats_url = \"nats://a\"\nnamespace = \"a_b\"",
            "nats_url = \"nats://a\"\nuser = \"u\"",
            "nats_url = \"nats://a\"\ntls_cert_file = \"c.pem\"",
            "nats_url = \"nats://a\"\nmax_stream_bytes = 10",
        ] {
            assert!(parse(bad).expect("parses").check().is_err(), "{bad}");
        }
        assert!(parse("nats_url = \"nats://a\"\nreplica = 3").is_err());
    }
}
