//! TLS for the tests: a certificate authority made on the spot (rcgen), the certificates it
//! issues written to PEM files for the bridge's `[tls]` table, and rustls clients that trust
//! it (optionally presenting a client certificate).
//!
//! A [`TlsClient`] goes into an [`crate::Endpoint::Mqtts`] or [`crate::Endpoint::Wss`], so
//! [`crate::TestClient`] and [`crate::RawClient`] run over TLS unchanged; [`connect`] opens a
//! bare TLS stream (HTTPS requests, certificate checks).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The ring provider, as the bridge uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority: a self-signed CA certificate and its key.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A certificate and its key, as PEM and DER.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER (what a peer sees in the handshake).
    pub cert_der: CertificateDer<'static>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl Issued {
    /// Writes `{name}.pem` and `{name}.key` into `dir`; their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        write_file(&cert, &self.cert_pem);
        write_file(&key, &self.key_pem);
        (cert, key)
    }
}

/// Writes a file, or panics saying which.
pub fn write_file(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
}

fn new_key() -> KeyPair {
    KeyPair::generate().unwrap_or_else(|e| panic!("cannot generate a key: {e}"))
}

fn params(names: &[&str], cn: &str) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params =
        CertificateParams::new(names).unwrap_or_else(|e| panic!("bad certificate parameters: {e}"));
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

impl TestCa {
    /// A new CA whose certificate has the common name `name`.
    pub fn new(name: &str) -> TestCa {
        let key = new_key();
        let mut params = params(&[], name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("cannot make the CA certificate: {e}"));
        TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, mut params: CertificateParams, usage: ExtendedKeyUsagePurpose) -> Issued {
        params.extended_key_usages = vec![usage];
        let key = new_key();
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("cannot issue a certificate: {e}"));
        Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self) -> Issued {
        self.issue(
            params(&["127.0.0.1", "localhost"], "bridge"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject's common name is `cn`.
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(params(&[], cn), ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A client certificate signed by nobody but itself, with the common name `cn`.
pub fn self_signed_client(cn: &str) -> Issued {
    let key = new_key();
    let mut params = params(&[], cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("cannot make a certificate: {e}"));
    Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_pem: key.serialize_pem(),
    }
}

/// A rustls client configuration: the CAs it trusts and, optionally, its certificate.
/// Equal when it is the same configuration (so an [`crate::Endpoint`] stays comparable).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for TlsClient {}

impl TlsClient {
    /// A client trusting `cas`, presenting no certificate.
    pub fn trusting(cas: &[&TestCa]) -> TlsClient {
        let config = TlsClient::builder(cas).with_no_client_auth();
        TlsClient {
            config: Arc::new(config),
        }
    }

    /// A client trusting `cas` and presenting `certificate`.
    pub fn with_certificate(cas: &[&TestCa], certificate: &Issued) -> TlsClient {
        let key = PrivateKeyDer::from_pem_slice(certificate.key_pem.as_bytes())
            .unwrap_or_else(|e| panic!("bad test key: {e}"));
        let config = TlsClient::builder(cas)
            .with_client_auth_cert(vec![certificate.cert_der.clone()], key)
            .unwrap_or_else(|e| panic!("rustls refused the client certificate: {e}"));
        TlsClient {
            config: Arc::new(config),
        }
    }

    fn builder(
        cas: &[&TestCa],
    ) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = RootCertStore::empty();
        for ca in cas {
            if let Err(e) = roots.add(ca.cert_der.clone()) {
                panic!("rustls refused the test CA: {e}");
            }
        }
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("rustls: {e}"))
            .with_root_certificates(roots)
    }

    /// The same client announcing ALPN `protocols` (HTTP clients send `http/1.1`).
    pub fn with_alpn(&self, protocols: &[&str]) -> TlsClient {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        TlsClient {
            config: Arc::new(config),
        }
    }
}

/// Opens TCP to `addr` and runs the TLS handshake, checking the server's certificate for
/// `addr`'s IP address. With TLS 1.3, a server that refuses the client's certificate says
/// so only after this returns: on the first read.
pub async fn connect(addr: SocketAddr, client: &TlsClient) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    TlsConnector::from(Arc::clone(&client.config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// The certificate the server presented on `stream` (its own, the first of its chain).
pub fn server_certificate(stream: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.clone().into_owned())
}
