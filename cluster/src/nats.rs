//! The connection to NATS and the JetStream streams cluster mode uses.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::config::ClusterConfig;

/// Why cluster mode cannot start or go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No NATS server could be reached (or it refused us).
    #[error("cannot connect to NATS at {urls}: {error}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        error: String,
    },
    /// A file of the `[cluster]` table could not be read.
    #[error("[cluster] {what}: {error}")]
    File {
        /// Which setting.
        what: &'static str,
        /// Why.
        error: std::io::Error,
    },
    /// The server has no JetStream, or a stream could not be made or read.
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// The names of everything a namespace holds in NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Subject prefix of QoS 1/2 and retained messages (stream [`Names::msgs`]).
    pub msg_subjects: String,
    /// Subject prefix of QoS 0 messages (core NATS, no stream).
    pub qos0_subjects: String,
    /// Subject prefix of retained messages (stream [`Names::retained`]).
    pub retained_subjects: String,
    /// The message stream.
    pub msgs: String,
    /// The retained-message stream.
    pub retained: String,
    /// The sessions bucket (its stream is `KV_<bucket>`).
    pub sessions: String,
    /// Prefix of the subjects nodes are asked things on (`<prefix>.<node>.release`).
    pub node_subjects: String,
}

impl Names {
    /// The names of `namespace`: subjects `<ns>.m.…`, `<ns>.q.…`, `<ns>.r.…`, streams
    /// `<NS>_MSGS` and `<NS>_RETAINED`.
    pub fn of(namespace: &str) -> Names {
        let upper = namespace.to_ascii_uppercase().replace('-', "_");
        Names {
            msg_subjects: format!("{namespace}.m"),
            qos0_subjects: format!("{namespace}.q"),
            retained_subjects: format!("{namespace}.r"),
            msgs: format!("{upper}_MSGS"),
            retained: format!("{upper}_RETAINED"),
            sessions: format!("{upper}_SESSIONS"),
            node_subjects: format!("{namespace}.node"),
        }
    }
}

/// A connection to the NATS cluster, with the streams made.
#[derive(Debug, Clone)]
pub struct Nats {
    /// Core NATS.
    pub client: async_nats::Client,
    /// JetStream, its requests bounded by `ack_timeout_ms`.
    pub js: jetstream::Context,
    /// Subject and stream names.
    pub names: Names,
    /// The sessions bucket.
    pub sessions: kv::Store,
    /// The settings it was made from.
    pub config: ClusterConfig,
}

impl Nats {
    /// Connects (failing at once if no server answers: the caller exits with the reason)
    /// and makes the streams if they do not exist yet.
    pub async fn connect(config: &ClusterConfig) -> Result<Nats, ClusterError> {
        let urls = config.nats_url.list();
        let connect_error = |error: String| ClusterError::Connect {
            urls: urls.join(","),
            error,
        };
        let mut options = match &config.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|error| ClusterError::File {
                    what: "credentials_file",
                    error,
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &config.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let options = options
            .require_tls(config.tls_required)
            .name(format!("mqtt-bridge {}", config.node))
            .connection_timeout(Duration::from_secs(5))
            // Once connected, reconnect for ever: the guard of the broker tells clients
            // while NATS is away.
            .max_reconnects(None);
        let addrs = urls
            .iter()
            .map(|u| u.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| connect_error(e.to_string()))?;
        let client = async_nats::connect_with_options(addrs, options)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_millis(config.ack_timeout_ms));
        let names = Names::of(&config.namespace);
        make_streams(&js, &names, config).await?;
        let sessions = js
            .get_key_value(&names.sessions)
            .await
            .map_err(|e| ClusterError::JetStream(format!("bucket {}: {e}", names.sessions)))?;
        Ok(Nats {
            client,
            js,
            names,
            sessions,
            config: config.clone(),
        })
    }

    /// The largest message body the servers take.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}

/// Makes the streams and the sessions bucket if they do not exist yet. The bucket's stream
/// is made here rather than by the client's `create_key_value`, which cannot read
/// nats-server 2.9's account information; its settings are those of a key-value bucket
/// keeping one revision per key.
async fn make_streams(
    js: &jetstream::Context,
    names: &Names,
    config: &ClusterConfig,
) -> Result<(), ClusterError> {
    let replicas = config.replicas;
    let max_bytes = i64::try_from(config.max_stream_bytes).unwrap_or(i64::MAX);
    let msgs = stream::Config {
        name: names.msgs.clone(),
        subjects: vec![format!("{}.>", names.msg_subjects)],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_bytes,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        description: Some("MQTT QoS 1/2 and retained messages, in routing order".into()),
        ..Default::default()
    };
    let retained = stream::Config {
        name: names.retained.clone(),
        subjects: vec![format!("{}.>", names.retained_subjects)],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: 1,
        max_bytes,
        // Full: a new topic is refused rather than an old one lost.
        discard: stream::DiscardPolicy::New,
        allow_direct: true,
        description: Some("MQTT retained messages, the latest per topic".into()),
        ..Default::default()
    };
    let sessions = stream::Config {
        name: format!("KV_{}", names.sessions),
        subjects: vec![format!("$KV.{}.>", names.sessions)],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_messages_per_subject: 1,
        max_bytes,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        description: Some("MQTT sessions: one record per client id".into()),
        ..Default::default()
    };
    for config in [msgs, retained, sessions] {
        let name = config.name.clone();
        // Two bridges making one stream at once: the reply to one of the requests can be
        // lost while the stream is made (nats-server #3677); asking again finds it.
        let mut tries = 0;
        loop {
            match js.get_or_create_stream(config.clone()).await {
                Ok(_) => break,
                // A busy cluster (a leader being elected, many streams made at once) may time
                // out too: asked again, for up to about half a minute in all.
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::warn!(stream = %name, error = %e, "stream not made; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(ClusterError::JetStream(format!("stream {name}: {e}"))),
            }
        }
    }
    Ok(())
}
