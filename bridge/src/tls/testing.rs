//! For the listeners' unit tests: a CA made with rcgen, a server certificate for
//! `127.0.0.1` and a client certificate (common name [`CLIENT_NAME`]) written to a temporary
//! directory, the [`ServerTls`] loaded from them, and a rustls client presenting that
//! client certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{provider, ServerTls, TlsConfig};

/// The common name of the client certificate.
pub(crate) const CLIENT_NAME: &str = "device-9";

/// The files and the client; the directory is removed on drop.
#[derive(Debug)]
pub(crate) struct Pki {
    dir: PathBuf,
    /// The `[tls]` table naming the files, client certificates verified, not required.
    pub(crate) config: TlsConfig,
    client: Arc<ClientConfig>,
}

impl Pki {
    pub(crate) fn new(label: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "bridge-pki-{label}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");

        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.distinguished_name.push(DnType::CommonName, "CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let ca = Issuer::new(ca_params, ca_key);
        let issue = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca).expect("cert");
            (cert, key)
        };
        let (server, server_key) = issue(vec!["127.0.0.1".to_owned()], "server");
        let (client, client_key) = issue(Vec::new(), CLIENT_NAME);

        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let config = TlsConfig {
            cert_file: Some(write("server.pem", server.pem())),
            key_file: Some(write("server.key", server_key.serialize_pem())),
            client_ca_file: Some(write("ca.pem", ca_cert.pem())),
            ..TlsConfig::default()
        };

        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("root");
        let key = PrivateKeyDer::from_pem_slice(client_key.serialize_pem().as_bytes())
            .expect("client key");
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![client.der().clone()], key)
            .expect("client certificate");
        Pki {
            dir,
            config,
            client: Arc::new(client),
        }
    }

    pub(crate) fn server_tls(&self) -> Arc<ServerTls> {
        Arc::new(ServerTls::load(&self.config).expect("TLS files load"))
    }

    /// A TLS connection to `addr`, presenting the client certificate.
    pub(crate) async fn connect(&self, addr: SocketAddr) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        TlsConnector::from(Arc::clone(&self.client))
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .expect("handshake")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
