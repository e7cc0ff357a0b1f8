//! TLS for both listeners: MQTT over TLS (`--mqtts`) and HTTPS (`--https`, which carries the
//! dashboard, the API and MQTT over WSS at `/mqtt`).
//!
//! rustls with the `ring` provider, given explicitly (no process-wide default is relied on,
//! and aws-lc-rs, which needs cmake, is not built). The `[tls]` table ([`TlsConfig`]) names
//! PEM files; [`ServerTls`] holds the server configurations built from them, one per
//! listener (HTTPS announces ALPN `http/1.1`, MQTT none), behind one lock:
//!
//! - **reload**: [`ServerTls::reload`] (SIGHUP) reads the files again and swaps in new
//!   configurations. A handshake takes the configuration in force when it starts and keeps
//!   its `Arc`, so connections already open are untouched and new ones get the new chain. A
//!   file that cannot be read or does not hold a usable certificate and key leaves the old
//!   configuration in force, and the reason is returned for the log.
//! - **client certificates**: with `client_ca_file`, clients are asked for a certificate and
//!   one they present must chain to that CA bundle; `require_client_certificate` refuses
//!   clients without one. The verified certificate's subject common name
//!   ([`certificate_name`]) goes to the broker ([`broker::ConnectionInfo::certificate_name`])
//!   and, for HTTPS, into [`crate::state::TlsConnection`].
//! - **failed handshakes** (plain text sent to a TLS port, an untrusted client certificate,
//!   a client too slow to finish) close the connection; they are logged per connection at
//!   debug level only, and at info level at most once per [`LOG_INTERVAL`] per listener with
//!   their count, since anyone can cause them at will.
//!
//! The handshake's deadline and the connection caps are the listeners' own (see
//! [`crate::tcp`] and [`crate::http_listener`]): the handshake runs inside a connection that
//! already holds its place.
//!
//! # Memory
//! rustls keeps, per connection, the handshake state until it completes, then the keys, a
//! receive buffer (4 KiB while idle, growing to one record, about 16 KiB, while one is
//! read, and shrunk back once it is consumed) and its outgoing buffers, capped by its 64 KiB
//! buffer limit. Measured (1000 idle MQTT 3.1.1 connections, TLS 1.3, a P-256 certificate),
//! an idle MQTTS connection cost about 21 KiB of RSS against about 9 KiB over plain TCP:
//! TLS adds about 12 KiB per connection, of which the 4 KiB receive buffer is the largest
//! single part. The session cache for resumption is rustls' default, 256 entries (shared
//! by both listeners), whatever the number of connections.

#[cfg(test)]
pub(crate) mod testing;
mod transport;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use broker::ratelog::{RateLimitedLog, LOG_INTERVAL};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub(crate) use transport::TlsTransport;

/// The `[tls]` table: the certificate of the TLS listeners and the client-certificate
/// policy. Every key is optional; `cert_file` and `key_file` are needed once `--mqtts` or
/// `--https` is on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TlsConfig {
    /// PEM file of the server's certificate chain: its own certificate first, then the
    /// intermediates. Read again on SIGHUP.
    pub(crate) cert_file: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1). Read again on
    /// SIGHUP.
    pub(crate) key_file: Option<PathBuf>,
    /// PEM bundle of the CAs client certificates must chain to. When set, clients are
    /// asked for a certificate; the common name of a verified one is the connection's
    /// certificate name. Read again on SIGHUP.
    pub(crate) client_ca_file: Option<PathBuf>,
    /// Refuse clients that present no certificate (needs `client_ca_file`). Off: a client
    /// may connect without one (and authenticate otherwise).
    pub(crate) require_client_certificate: bool,
    /// Take a verified client certificate's common name (CN) as the MQTT user name, as
    /// mosquitto's `use_identity_as_username` does: read by the authentication side, which
    /// then needs no password from such a client.
    pub(crate) use_identity_as_username: bool,
}

impl TlsConfig {
    /// Refuses combinations that cannot work.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.require_client_certificate && self.client_ca_file.is_none() {
            return Err(
                "[tls] require_client_certificate needs client_ca_file, the CAs that \
                        client certificates are verified against",
            );
        }
        Ok(())
    }
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// `cert_file` or `key_file` is not set.
    #[error("[tls] cert_file and key_file must both be set for a TLS listener")]
    NotConfigured,
    /// A file could not be read.
    #[error("cannot read {path}: {1}", path = .0.display())]
    Read(PathBuf, io::Error),
    /// A file is not valid PEM, or holds nothing of the kind expected.
    #[error("{path}: {1}", path = .0.display())]
    Pem(PathBuf, rustls_pki_types::pem::Error),
    /// `cert_file` holds no certificate.
    #[error("{path}: no certificate (expected PEM `CERTIFICATE` blocks)", path = .0.display())]
    NoCertificate(PathBuf),
    /// A CA certificate cannot be used as a trust anchor.
    #[error("{path}: {1}", path = .0.display())]
    BadCa(PathBuf, rustls::Error),
    /// The client verifier could not be built from the CA bundle.
    #[error("{path}: {1}", path = .0.display())]
    Verifier(PathBuf, rustls::server::VerifierBuilderError),
    /// The key does not fit the certificate, or is of an unsupported kind.
    #[error("{cert} with {key}: {2}", cert = .0.display(), key = .1.display())]
    Key(PathBuf, PathBuf, rustls::Error),
    /// rustls refused the configuration.
    #[error("{0}")]
    Rustls(rustls::Error),
}

/// The TLS listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// `--mqtts`.
    Mqtts,
    /// `--https`.
    Https,
}

impl Listener {
    /// The listener's name in logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Listener::Mqtts => "mqtts",
            Listener::Https => "https",
        }
    }
}

/// The server side of TLS, shared by both TLS listeners and reloaded on SIGHUP.
#[derive(Debug)]
pub(crate) struct ServerTls {
    /// Where the certificate, key and CA bundle are read from.
    files: TlsConfig,
    /// The configurations in force. Locked only to clone or replace the `Arc`.
    current: RwLock<Arc<Acceptors>>,
    /// Failed handshakes since the last line about them, one count per listener.
    failures: [Mutex<RateLimitedLog>; 2],
}

/// One server configuration per listener, built from the same files.
#[derive(Debug)]
struct Acceptors {
    mqtts: Arc<ServerConfig>,
    https: Arc<ServerConfig>,
}

impl ServerTls {
    /// Reads the files of `files` and builds the configurations.
    pub(crate) fn load(files: &TlsConfig) -> Result<ServerTls, TlsError> {
        let acceptors = build(files)?;
        Ok(ServerTls {
            files: files.clone(),
            current: RwLock::new(Arc::new(acceptors)),
            failures: Default::default(),
        })
    }

    /// Reads the files again; new handshakes use them from now on. On error the previous
    /// configuration stays in force.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let acceptors = Arc::new(build(&self.files)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = acceptors;
        Ok(())
    }

    /// The acceptor for a new connection on `listener`: the configuration in force now.
    pub(crate) fn acceptor(&self, listener: Listener) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(match listener {
            Listener::Mqtts => &current.mqtts,
            Listener::Https => &current.https,
        }))
    }

    /// Runs the server handshake on `io` within `deadline`; the TLS stream and the client
    /// certificate's name, or `None` (logged) when it failed.
    pub(crate) async fn accept<IO>(
        &self,
        listener: Listener,
        io: IO,
        peer: SocketAddr,
        deadline: Duration,
    ) -> Option<(TlsStream<IO>, Option<String>)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let accepted =
            match tokio::time::timeout(deadline, self.acceptor(listener).accept(io)).await {
                Ok(accepted) => accepted,
                Err(_elapsed) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake not complete in time",
                )),
            };
        match accepted {
            Ok(stream) => {
                let name = certificate_name(stream.get_ref().1);
                Some((stream, name))
            }
            Err(e) => {
                self.handshake_failed(listener, peer, &e);
                None
            }
        }
    }

    /// Logs a failed handshake: at debug level each time, at info level at most once per
    /// [`LOG_INTERVAL`] per listener, with the count since the last line.
    pub(crate) fn handshake_failed(&self, listener: Listener, peer: SocketAddr, error: &io::Error) {
        let listener_name = listener.name();
        tracing::debug!(%peer, listener = listener_name, %error, "TLS handshake failed");
        let index = match listener {
            Listener::Mqtts => 0,
            Listener::Https => 1,
        };
        let times = self.failures[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hit(Instant::now());
        if let Some(times) = times {
            tracing::info!(
                listener = listener_name,
                times,
                last_peer = %peer,
                last_error = %error,
                "TLS handshakes failed (plain text on a TLS port, an untrusted or missing \
                 client certificate, a client too slow); one line per {LOG_INTERVAL:?}"
            );
        }
    }
}

/// The ring provider, given to every builder explicitly.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds both listeners' configurations from the files.
fn build(files: &TlsConfig) -> Result<Acceptors, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&files.cert_file, &files.key_file) else {
        return Err(TlsError::NotConfigured);
    };
    let chain = read_certificates(cert_file)?;
    let key = read_key(key_file)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let builder = match &files.client_ca_file {
        Some(ca_file) => {
            let roots = read_roots(ca_file)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Verifier(ca_file.clone(), e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mqtts = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Key(cert_file.clone(), key_file.clone(), e))?;
    let mut https = mqtts.clone();
    // hyper serves HTTP/1.1 only; a client offering only h2 is refused in the handshake
    // rather than misunderstood after it.
    https.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Acceptors {
        mqtts: Arc::new(mqtts),
        https: Arc::new(https),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.to_owned(), e))
}

/// Every certificate in a PEM file, in order (other blocks, such as a key, are skipped).
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(path.to_owned(), e))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certificates)
}

/// The first private key in a PEM file: PKCS#8, PKCS#1 (`RSA PRIVATE KEY`) or SEC1
/// (`EC PRIVATE KEY`).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem(path.to_owned(), e))
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots
            .add(certificate)
            .map_err(|e| TlsError::BadCa(path.to_owned(), e))?;
    }
    Ok(roots)
}

/// The subject common name (CN) of the client certificate the handshake verified, if the
/// client presented one (rustls keeps a certificate only once it passed the verifier).
pub(crate) fn certificate_name(connection: &ServerConnection) -> Option<String> {
    common_name(connection.peer_certificates()?.first()?)
}

/// The first common name of a DER certificate's subject, if it has one that is a string.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = certificate.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(label: &str) -> Files {
            let dir = std::env::temp_dir().join(format!(
                "bridge-tls-{label}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Files { dir }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A self-signed certificate for `localhost` with the common name `cn`: (cert, key).
    fn self_signed(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("p");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn the_common_name_of_a_certificate_is_read_from_its_subject() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["device-7".to_owned()]).expect("p");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(common_name(cert.der()).as_deref(), Some("device-7"));

        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).expect("p");
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(common_name(cert.der()), None, "no CN in the subject");
        assert_eq!(common_name(b"not a certificate"), None);
    }

    #[test]
    fn a_matching_certificate_and_key_load_and_a_bad_reload_keeps_them() {
        let files = Files::new("reload");
        let (cert, key) = self_signed("server");
        let config = TlsConfig {
            cert_file: Some(files.write("cert.pem", &cert)),
            key_file: Some(files.write("key.pem", &key)),
            ..TlsConfig::default()
        };
        let tls = ServerTls::load(&config).expect("loads");
        let before = tls.acceptor(Listener::Https);
        assert_eq!(before.config().alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(tls
            .acceptor(Listener::Mqtts)
            .config()
            .alpn_protocols
            .is_empty());

        // Another certificate's key: refused, the old configuration stays.
        let (_, other_key) = self_signed("other");
        files.write("key.pem", &other_key);
        let err = tls.reload().expect_err("a key that does not fit");
        assert!(matches!(err, TlsError::Key(..)), "{err}");
        assert!(Arc::ptr_eq(
            before.config(),
            tls.acceptor(Listener::Https).config()
        ));

        files.write("cert.pem", "garbage");
        assert!(matches!(tls.reload(), Err(TlsError::NoCertificate(_))));
        let _ = std::fs::remove_file(files.dir.join("cert.pem"));
        assert!(matches!(tls.reload(), Err(TlsError::Read(..))));

        // A good pair again: swapped in.
        let (cert, key) = self_signed("server-2");
        files.write("cert.pem", &cert);
        files.write("key.pem", &key);
        tls.reload().expect("reloads");
        assert!(!Arc::ptr_eq(
            before.config(),
            tls.acceptor(Listener::Https).config()
        ));
    }

    #[test]
    fn keys_in_pkcs8_pkcs1_and_sec1_are_read() {
        let files = Files::new("keys");
        let (cert, key) = self_signed("server");
        files.write("cert.pem", &cert);
        let path = files.write("key.pem", &key);
        assert!(matches!(read_key(&path), Ok(PrivateKeyDer::Pkcs8(_))));
        // The same kinds of blocks `openssl` writes for traditional RSA and EC keys.
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAEC\n-----END RSA PRIVATE KEY-----\n";
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAEC\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            read_key(&files.write("rsa.pem", pkcs1)),
            Ok(PrivateKeyDer::Pkcs1(_))
        ));
        assert!(matches!(
            read_key(&files.write("ec.pem", sec1)),
            Ok(PrivateKeyDer::Sec1(_))
        ));
        assert!(matches!(
            read_key(&files.write("none.pem", &cert)),
            Err(TlsError::Pem(..))
        ));
    }

    #[test]
    fn client_certificates_need_a_ca_bundle_that_holds_certificates() {
        let files = Files::new("ca");
        let (cert, key) = self_signed("server");
        let mut config = TlsConfig {
            cert_file: Some(files.write("cert.pem", &cert)),
            key_file: Some(files.write("key.pem", &key)),
            client_ca_file: Some(files.write("ca.pem", &key)),
            ..TlsConfig::default()
        };
        assert!(matches!(
            ServerTls::load(&config),
            Err(TlsError::NoCertificate(_))
        ));
        config.client_ca_file = Some(files.write("ca.pem", &cert));
        assert!(ServerTls::load(&config).is_ok());

        let required = TlsConfig {
            require_client_certificate: true,
            client_ca_file: None,
            ..config
        };
        assert!(required.check().is_err());
        assert!(matches!(
            ServerTls::load(&TlsConfig::default()),
            Err(TlsError::NotConfigured)
        ));
    }
}
