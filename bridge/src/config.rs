//! The bridge's settings: the command line, the optional TOML file, and how they combine.
//!
//! Precedence, highest first: a command-line flag, the `--config` file, the built-in default.
//! The file's `[broker]` table is [`broker::BrokerConfig`] itself, so its keys are that
//! struct's field names and an unknown key is an error, not a silent no-op. The `[server]`
//! table ([`ServerConfig`]) holds the bridge's own limits on its listeners and who may reach
//! them; the `[api]` table ([`ApiConfig`]) the admin API's tokens (see [`crate::guard`]); the
//! `[tls]` table ([`TlsConfig`]) the certificate files of the TLS listeners.
//!
//! Every listen address may be `none`: that listener is not started (at least one must
//! remain). `--mqtts` and `--https` are off unless given, and need `[tls] cert_file` and
//! `key_file`.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::guard::{ApiToken, HostPattern, OriginPattern, ProxyNet};
pub(crate) use crate::tls::TlsConfig;

/// Where the dashboard, the WebSocket endpoint and the HTTP API listen by default.
pub(crate) const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// Where MQTT over TCP listens by default.
pub(crate) const DEFAULT_MQTT: &str = "127.0.0.1:1883";
/// The listen address that turns a listener off.
const NONE: &str = "none";
/// The data directory by default: the embedded store lives there.
pub(crate) const DEFAULT_DATA: &str = "./data";
/// The dashboard's static files, relative to the repository root.
const DEFAULT_WEB: &str = "web";
/// The browser client's package as `client-wasm/build.sh` writes it, relative to the
/// repository root.
const DEFAULT_PKG: &str = "client-wasm/pkg";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "bridge",
    version,
    about = "An MQTT 3.1.1 / 5.0 broker over TCP and WebSocket, with a web dashboard"
)]
pub(crate) struct Args {
    /// Address for HTTP: the dashboard, MQTT over WebSocket at /mqtt and the API; `none`
    /// turns it off [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// Address for MQTT over TCP; `none` turns it off [default: 127.0.0.1:1883]
    #[arg(long, value_name = "ADDR")]
    pub(crate) mqtt: Option<String>,
    /// Address for MQTT over TLS (conventionally port 8883); needs `[tls] cert_file` and
    /// `key_file` [default: off]
    #[arg(long, value_name = "ADDR")]
    pub(crate) mqtts: Option<String>,
    /// Address for HTTPS: what --http serves (dashboard, API, MQTT over WSS at /mqtt), over
    /// TLS; needs `[tls] cert_file` and `key_file` [default: off]
    #[arg(long, value_name = "ADDR")]
    pub(crate) https: Option<String>,
    /// Data directory of the embedded session store (created if missing); `none` keeps
    /// everything in memory only [default: ./data]
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Option<String>,
    /// Directory of static files served at / [default: the repository's web/]
    #[arg(long, value_name = "DIR")]
    pub(crate) web: Option<PathBuf>,
    /// Directory of the browser client's npm package, served at /pkg/ for the dashboard's
    /// playground [default: the repository's client-wasm/pkg/]
    #[arg(long, value_name = "DIR")]
    pub(crate) pkg: Option<PathBuf>,
    /// TOML file with the settings above, a `[broker]` table of broker limits, a `[server]`
    /// table of listener limits and a `[tls]` table of certificate files
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Log lines for people (`text`) or one JSON object per line for log shippers (`json`)
    /// [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
    /// Join a cluster of bridges through the NATS servers at URL (several separated by
    /// commas); the `[cluster]` table of --config sets the rest [default: off]
    #[arg(long, value_name = "URL")]
    pub(crate) cluster: Option<String>,
    /// A maintenance command instead of serving
    #[command(subcommand)]
    pub(crate) command: Option<crate::auth::Command>,
}

/// The `--config` file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    http: Option<String>,
    mqtt: Option<String>,
    mqtts: Option<String>,
    https: Option<String>,
    data: Option<String>,
    web: Option<PathBuf>,
    pkg: Option<PathBuf>,
    log_format: Option<LogFormat>,
    broker: broker::BrokerConfig,
    server: ServerConfig,
    tls: TlsConfig,
    api: ApiConfig,
    auth: crate::auth::AuthConfig,
    metrics: crate::metrics::MetricsConfig,
    cluster: Option<cluster::ClusterConfig>,
}

/// How log lines are written (`--log-format`, `log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Lines for people (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The `[server]` table: limits of the bridge's own listeners (the broker's are in
/// `[broker]`). Every key is optional; see the README's limits table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// Most HTTP connections open at once (dashboard, API, and WebSocket requests not yet
    /// upgraded). Beyond it new connections wait in the kernel's listen backlog, holding no
    /// file descriptor of ours. An upgraded WebSocket no longer counts here: it counts as
    /// an MQTT connection (`broker.max_connections`). Also held under a quarter of the
    /// file-descriptor limit, so that HTTP can never take the descriptors MQTT needs.
    pub(crate) max_http_connections: usize,
    /// Seconds a client has to send a request's whole header, counted from its first
    /// byte, or from the accept for a new connection (which must start with a request).
    /// Half-sent headers and sockets that send nothing are closed after it.
    pub(crate) http_header_timeout_secs: u64,
    /// Seconds a keep-alive connection may sit between requests, and the longest a
    /// request in progress may go without a byte moving either way (a body that does not
    /// come, a response the client does not read). A live event stream sends a keep-alive
    /// comment every 15 s, so it is never idle this long.
    pub(crate) http_idle_timeout_secs: u64,
    /// Threads polling the connections: 1 (the default) polls them in the order their
    /// sockets became ready, so packets from different connections reach the engine in
    /// arrival order (see `runtime` in main.rs); 0 is one per core; more threads spread
    /// TLS and WebSocket framing over cores at the cost of that order.
    pub(crate) worker_threads: usize,
    /// Host names (with or without `:port`; without, any port) that requests may name in
    /// `Host`, besides the listen addresses, `localhost`, `127.0.0.1` and `[::1]`, which are
    /// always allowed. Others are answered 403, against DNS rebinding. `["*"]`: any.
    pub(crate) allowed_hosts: Vec<HostPattern>,
    /// Origins whose pages may open MQTT WebSockets at `/mqtt`, besides the bridge's own
    /// origin and clients that send no `Origin` (not browsers). `["*"]`: any.
    pub(crate) allowed_origins: Vec<OriginPattern>,
    /// Reverse proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For` / `Forwarded`
    /// header names the client. From anyone else those headers are ignored.
    pub(crate) trusted_proxies: Vec<ProxyNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_http_connections: 1024,
            http_header_timeout_secs: 10,
            http_idle_timeout_secs: 60,
            worker_threads: 1,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The `[api]` table: who may use the admin API under `/api/v1/`. Every key is optional;
/// with no token, the API answers loopback clients only (see [`crate::guard`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ApiConfig {
    /// `Authorization: Bearer <token>` allows every API request.
    pub(crate) token: Option<ApiToken>,
    /// `Authorization: Bearer <read_token>` allows GET and HEAD only.
    pub(crate) read_token: Option<ApiToken>,
    /// Origins whose pages may call the API from a browser: they get CORS headers, and
    /// without a token their mutating requests are not refused as cross-origin. `["*"]`: any.
    pub(crate) cors_origins: Vec<OriginPattern>,
}

impl ApiConfig {
    /// Refuses a read token equal to the full one (it would grant everything).
    fn check(&self) -> Result<(), &'static str> {
        if self.token.is_some() && self.token == self.read_token {
            return Err("[api] token and read_token must differ");
        }
        Ok(())
    }
}

/// Where the data would live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataDir {
    /// `--data none`: memory only, by request.
    None,
    /// A directory (not used yet).
    Dir(PathBuf),
}

/// The settings in force after the file and the flags are combined.
#[derive(Debug)]
pub(crate) struct Config {
    /// How log lines are written.
    pub(crate) log_format: LogFormat,
    /// HTTP listen address, as given (resolved when bound); `None`: no plain HTTP listener.
    pub(crate) http: Option<String>,
    /// MQTT over TCP listen address, as given; `None`: no plain MQTT listener.
    pub(crate) mqtt: Option<String>,
    /// MQTT over TLS listen address, as given; `None` (the default): off.
    pub(crate) mqtts: Option<String>,
    /// HTTPS listen address, as given; `None` (the default): off.
    pub(crate) https: Option<String>,
    /// The data directory.
    pub(crate) data: DataDir,
    /// The static files served at `/`.
    pub(crate) web: PathBuf,
    /// The browser client's package (`client-wasm/build.sh` output), served at `/pkg/`; the
    /// dashboard's playground imports it from there.
    pub(crate) pkg: PathBuf,
    /// The broker engine's limits and policies.
    pub(crate) broker: broker::BrokerConfig,
    /// The listeners' limits and who may reach them.
    pub(crate) server: ServerConfig,
    /// The TLS listeners' certificate files and client-certificate policy.
    pub(crate) tls: TlsConfig,
    /// The admin API's tokens.
    pub(crate) api: ApiConfig,
    /// `[auth]` and `[auth.jwt]`: who may connect and what they may touch.
    pub(crate) auth: crate::auth::AuthConfig,
    /// `[metrics]`: the scrape token of `/metrics`.
    pub(crate) metrics: crate::metrics::MetricsConfig,
    /// `[cluster]` or `--cluster`: the NATS cluster this bridge joins; `None`: one node.
    pub(crate) cluster: Option<cluster::ClusterConfig>,
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {1}", path = .0.display())]
    Read(PathBuf, std::io::Error),
    /// The file is not valid TOML for these settings.
    #[error("invalid config file {path}: {1}", path = .0.display())]
    Parse(PathBuf, toml::de::Error),
    /// A value is of the right type but cannot work.
    #[error("invalid config file {path}: {1}", path = .0.display())]
    Invalid(PathBuf, &'static str),
    /// The listeners asked for cannot run (none at all, or TLS without a certificate).
    #[error("{0}")]
    Listeners(&'static str),
    /// The cluster settings cannot work (`--cluster` with the `[cluster]` table).
    #[error("{0}")]
    Cluster(&'static str),
}

impl Config {
    /// Reads the `--config` file, if any, and applies the flags over it.
    pub(crate) fn load(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                let file = parse(&text).map_err(|e| ConfigError::Parse(path.clone(), e))?;
                file.server
                    .check()
                    .and_then(|()| file.api.check())
                    .map_err(|e| ConfigError::Invalid(path.clone(), e))?;
                file.tls
                    .check()
                    .map_err(|e| ConfigError::Invalid(path.clone(), e))?;
                if let (Some(cluster), None) = (&file.cluster, &args.cluster) {
                    cluster
                        .check()
                        .map_err(|e| ConfigError::Invalid(path.clone(), e))?;
                }
                file
            }
            None => FileConfig::default(),
        };
        let config = Config::merge(args, file);
        config.check_listeners().map_err(ConfigError::Listeners)?;
        if let Some(cluster) = &config.cluster {
            cluster.check().map_err(ConfigError::Cluster)?;
        }
        Ok(config)
    }

    /// Refuses a set of listeners that cannot run: none at all, or a TLS one without its
    /// certificate and key.
    fn check_listeners(&self) -> Result<(), &'static str> {
        let tls = self.mqtts.is_some() || self.https.is_some();
        if !tls && self.http.is_none() && self.mqtt.is_none() {
            return Err(
                "every listener is off (`none`): keep at least one of --http, --mqtt, \
                        --mqtts, --https",
            );
        }
        if tls && (self.tls.cert_file.is_none() || self.tls.key_file.is_none()) {
            return Err(
                "--mqtts and --https need a certificate: set [tls] cert_file and \
                        key_file in the --config file",
            );
        }
        Ok(())
    }

    fn merge(args: Args, file: FileConfig) -> Config {
        let data = args
            .data
            .or(file.data)
            .unwrap_or_else(|| DEFAULT_DATA.to_owned());
        Config {
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            http: listen(args.http.or(file.http), Some(DEFAULT_HTTP)),
            mqtt: listen(args.mqtt.or(file.mqtt), Some(DEFAULT_MQTT)),
            mqtts: listen(args.mqtts.or(file.mqtts), None),
            https: listen(args.https.or(file.https), None),
            data: if data == "none" {
                DataDir::None
            } else {
                DataDir::Dir(PathBuf::from(data))
            },
            web: args
                .web
                .or(file.web)
                .unwrap_or_else(|| repository_dir(DEFAULT_WEB)),
            pkg: args
                .pkg
                .or(file.pkg)
                .unwrap_or_else(|| repository_dir(DEFAULT_PKG)),
            broker: file.broker,
            server: file.server,
            tls: file.tls,
            api: file.api,
            metrics: file.metrics,
            auth: file.auth,
            // `--cluster URL` names the servers; the table, if any, sets the rest.
            cluster: match (args.cluster, file.cluster) {
                (Some(url), Some(table)) => Some(cluster::ClusterConfig {
                    nats_url: cluster::config::Urls::One(url),
                    ..table
                }),
                (Some(url), None) => Some(cluster::ClusterConfig::at(&url)),
                (None, table) => table,
            },
        }
    }
}

/// A listen address as given (flag or file), `default` when not given, `None` for `none`.
fn listen(given: Option<String>, default: Option<&str>) -> Option<String> {
    match given {
        Some(addr) if addr == NONE => None,
        Some(addr) => Some(addr),
        None => default.map(str::to_owned),
    }
}

impl ServerConfig {
    /// Refuses values that would make a listener unusable.
    fn check(&self) -> Result<(), &'static str> {
        if self.max_http_connections == 0 {
            return Err("[server] max_http_connections must be at least 1");
        }
        if self.http_header_timeout_secs == 0 || self.http_idle_timeout_secs == 0 {
            return Err(
                "[server] http_header_timeout_secs and http_idle_timeout_secs must be at least 1",
            );
        }
        Ok(())
    }
}

fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
    toml::from_str(text)
}

/// A directory of the repository (`web`, `client-wasm/pkg`): relative to the current
/// directory when run from the repository root (as `scripts/run.sh` does), else next to this
/// crate's sources at build time, so `cargo run` from anywhere in the checkout finds it.
fn repository_dir(relative: &str) -> PathBuf {
    let here = Path::new(relative);
    if here.is_dir() {
        here.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::parse_from(std::iter::once("bridge").chain(list.iter().copied()))
    }

    #[test]
    fn defaults_are_the_documented_addresses_and_data_dir() {
        let c = Config::merge(args(&[]), FileConfig::default());
        assert_eq!(c.http.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(c.mqtt.as_deref(), Some("127.0.0.1:1883"));
        assert_eq!((c.mqtts.as_deref(), c.https.as_deref()), (None, None));
        assert_eq!(c.data, DataDir::Dir(PathBuf::from("./data")));
        assert_eq!(
            c.broker.max_packet_size,
            broker::BrokerConfig::default().max_packet_size
        );
        assert!(c.web.ends_with("web"), "web default {}", c.web.display());
        assert!(
            c.pkg.ends_with("client-wasm/pkg"),
            "pkg default {}",
            c.pkg.display()
        );
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file = parse(
            "http = \"0.0.0.0:80\"\nmqtt = \"0.0.0.0:1883\"\ndata = \"none\"\n\
             web = \"/srv/web\"\npkg = \"/srv/pkg\"\n\
             [broker]\nmax_packet_size = 4096\noverflow_policy = \"drop-newest\"\n\
             max_publisher_pause_ms = 500\n",
        )
        .expect("valid file");
        let c = Config::merge(args(&["--http", "127.0.0.1:0", "--pkg", "/opt/pkg"]), file);
        assert_eq!(c.http.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(c.web, PathBuf::from("/srv/web"));
        assert_eq!(c.pkg, PathBuf::from("/opt/pkg"));
        assert_eq!(c.mqtt.as_deref(), Some("0.0.0.0:1883"));
        assert_eq!(c.data, DataDir::None);
        assert_eq!(c.broker.max_packet_size, 4096);
        assert_eq!(c.broker.overflow_policy, broker::OverflowPolicy::DropNewest);
        assert_eq!(c.broker.max_publisher_pause_ms, 500);
    }

    #[test]
    fn the_server_table_is_read_and_its_keys_are_optional() {
        let c = Config::merge(args(&[]), FileConfig::default());
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.server.max_http_connections, 1024);
        assert_eq!(c.server.http_header_timeout_secs, 10);
        assert_eq!(c.server.http_idle_timeout_secs, 60);
        assert_eq!(c.server.worker_threads, 1);

        let file = parse(
            "[server]\nmax_http_connections = 50\nhttp_header_timeout_secs = 3\n\
             http_idle_timeout_secs = 7\nworker_threads = 0\n",
        )
        .expect("valid file");
        let c = Config::merge(args(&[]), file);
        assert_eq!(
            c.server,
            ServerConfig {
                max_http_connections: 50,
                http_header_timeout_secs: 3,
                http_idle_timeout_secs: 7,
                worker_threads: 0,
                ..ServerConfig::default()
            }
        );

        let file = parse("[server]\nhttp_idle_timeout_secs = 5\n").expect("valid file");
        assert_eq!(file.server.http_idle_timeout_secs, 5);
        assert_eq!(file.server.max_http_connections, 1024);
    }

    #[test]
    fn server_values_that_cannot_work_are_refused() {
        for text in [
            "[server]\nmax_http_connections = 0",
            "[server]\nhttp_header_timeout_secs = 0",
            "[server]\nhttp_idle_timeout_secs = 0",
        ] {
            let file = parse(text).expect("valid TOML");
            assert!(file.server.check().is_err(), "{text}");
        }
        assert!(parse("[server]\nmax_http_connections = -1").is_err());
        assert!(ServerConfig::default().check().is_ok());

        let dir = std::env::temp_dir().join(format!("bridge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[server]\nmax_http_connections = 0\n").expect("write");
        let err = Config::load(args(&["--config", &path.to_string_lossy()])).expect_err("refused");
        assert!(matches!(err, ConfigError::Invalid(..)), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn none_turns_a_listener_off_and_tls_listeners_come_from_flags_or_the_file() {
        let file = parse(
            "mqtt = \"none\"\nmqtts = \"0.0.0.0:8883\"\nhttps = \"0.0.0.0:8443\"\n\
             [tls]\ncert_file = \"/etc/bridge/cert.pem\"\nkey_file = \"/etc/bridge/key.pem\"\n\
             client_ca_file = \"/etc/bridge/ca.pem\"\nrequire_client_certificate = true\n\
             use_identity_as_username = true\n",
        )
        .expect("valid file");
        let c = Config::merge(args(&["--http", "none", "--https", "127.0.0.1:0"]), file);
        assert_eq!(c.http, None);
        assert_eq!(c.mqtt, None);
        assert_eq!(c.mqtts.as_deref(), Some("0.0.0.0:8883"));
        assert_eq!(c.https.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(
            c.tls.cert_file.as_deref(),
            Some(Path::new("/etc/bridge/cert.pem"))
        );
        assert!(c.tls.require_client_certificate);
        assert!(c.tls.use_identity_as_username);
        assert!(c.check_listeners().is_ok());

        // A flag's `none` also turns off what the file turned on.
        let file = parse("mqtts = \"0.0.0.0:8883\"\n").expect("valid file");
        let c = Config::merge(args(&["--mqtts", "none"]), file);
        assert_eq!(c.mqtts, None);
        assert!(!c.tls.use_identity_as_username, "off by default");
    }

    #[test]
    fn listeners_that_cannot_run_are_refused() {
        let c = Config::merge(
            args(&["--http", "none", "--mqtt", "none"]),
            FileConfig::default(),
        );
        assert!(c.check_listeners().is_err(), "no listener at all");
        for flag in ["--mqtts", "--https"] {
            let c = Config::merge(args(&[flag, "127.0.0.1:0"]), FileConfig::default());
            let err = c.check_listeners().expect_err("TLS without a certificate");
            assert!(err.contains("cert_file"), "{err}");
        }
        let file = parse("[tls]\ncert_file = \"c.pem\"\n").expect("valid file");
        let c = Config::merge(args(&["--mqtts", "127.0.0.1:0"]), file);
        assert!(
            c.check_listeners().is_err(),
            "a certificate without its key"
        );
    }

    #[test]
    fn the_access_keys_are_read_and_bad_entries_are_refused_with_their_text() {
        let file = parse(
            "[server]\nallowed_hosts = [\"bridge.example\", \"*\"]\n\
             allowed_origins = [\"https://app.example\"]\n\
             trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n\
             [api]\ntoken = \"full-token\"\nread_token = \"read-token\"\n\
             cors_origins = [\"*\"]\n",
        )
        .expect("valid file");
        assert_eq!(file.server.allowed_hosts.len(), 2);
        assert_eq!(file.server.allowed_origins.len(), 1);
        assert_eq!(file.server.trusted_proxies.len(), 2);
        assert!(file.api.token.is_some() && file.api.read_token.is_some());
        assert!(file.api.check().is_ok());
        assert_eq!(ApiConfig::default().token, None);

        for (text, needle) in [
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/40\"]",
                "10.0.0.0/40",
            ),
            (
                "[server]\nallowed_origins = [\"app.example\"]",
                "app.example",
            ),
            ("[server]\nallowed_hosts = [\"a b\"]", "a b"),
            ("[api]\ntoken = \"\"", "token"),
            ("[api]\ncors = []", "cors"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let same = parse("[api]\ntoken = \"same-token\"\nread_token = \"same-token\"")
            .expect("valid TOML");
        assert!(same.api.check().is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(parse("[tls]\ncert_fil = \"c.pem\"").is_err());
        assert!(parse("[server]\nmax_http_conections = 1").is_err());
        assert!(parse("htpp = \"x\"").is_err());
        assert!(parse("[broker]\nmax_packet_sise = 1").is_err());
        assert!(parse("[broker]\nmax_packet_size = \"big\"").is_err());
    }
}
