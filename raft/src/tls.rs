//! The cluster CA and node certificates, and the mutual-TLS configs for QUIC.
//!
//! Every node certificate is issued by the cluster CA for two names: [`SERVER_NAME`] (some
//! node of this cluster) and [`node_name`] of its own id. A dialer checks that the peer it
//! dials is the node it meant; the server side checks what each request claims against
//! the name ([`crate::peer`]). Both directions require a certificate from the cluster CA.

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use std::time::Duration;
use tether_store::NodeId;

/// The DNS name every node certificate carries: some node of this cluster.
pub const SERVER_NAME: &str = "tether-node";

/// The DNS name only node `id`'s certificate carries (`node-3.tether-node`).
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.{SERVER_NAME}")
}
const ALPN: &[u8] = b"tether/1";

/// Requests one peer may have in flight on its connection at once.
pub const MAX_STREAMS_PER_PEER: u32 = 256;

/// Building certificates or TLS configs failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM file did not parse.
    #[error("pem: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// QUIC refused the rustls configuration.
    #[error("quic crypto: {0}")]
    Quic(String),
}

/// PEM text of a certificate and its private key.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Tether cluster CA");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Generates a fresh cluster CA.
pub fn generate_ca() -> Result<CertPair, TlsError> {
    let key = KeyPair::generate()?;
    let issuer = CertifiedIssuer::self_signed(ca_params()?, &key)?;
    Ok(CertPair {
        cert_pem: issuer.as_ref().pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues node `id`'s certificate (client and server auth) signed by the CA whose key is
/// given.
pub fn issue_node_cert(ca_key_pem: &str, id: NodeId) -> Result<CertPair, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned(), node_name(id)])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("tether node {id}"));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a server certificate (server auth only) for `names` (IP addresses and DNS names)
/// signed by the CA whose key is given: what a node's HTTPS clients see.
pub fn issue_server_cert(ca_key_pem: &str, names: Vec<String>) -> Result<CertPair, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "tether https");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A node's TLS identity: its CA, its certificate and key, all PEM.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    /// The cluster CA certificate.
    pub ca_cert_pem: String,
    /// This node's certificate and key.
    pub node: CertPair,
}

impl TlsIdentity {
    fn parts(
        &self,
    ) -> Result<
        (
            rustls::RootCertStore,
            Vec<CertificateDer<'static>>,
            PrivateKeyDer<'static>,
        ),
        TlsError,
    > {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.ca_cert_pem.as_bytes()) {
            roots.add(ca?)?;
        }
        let certs = CertificateDer::pem_slice_iter(self.node.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.node.key_pem.as_bytes())?;
        Ok((roots, certs, key))
    }

    /// The QUIC server side: requires a client certificate from the cluster CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let (roots, certs, key) = self.parts()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }

    /// The QUIC client side: trusts only the cluster CA and presents this node's certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let (roots, certs, key) = self.parts()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport());
        Ok(config)
    }
}

/// Transport settings for a LAN: notice a dead peer within half a second, allow the RPCs
/// one peer has in flight (replication, four forwarding calls, a read-index round, the
/// gateways' signals) with room to spare, and no unidirectional streams (none are used). A connection to a peer that was killed and restarted on
/// the same address never answers again; it must be gone before the next election needs
/// it (a new leader stands about 320 ms after the old one's last heartbeat), or the vote
/// sent on it is lost and the election takes a second round.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_STREAMS_PER_PEER.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.keep_alive_interval(Some(Duration::from_millis(100)));
    t.max_idle_timeout(Some(
        Duration::from_millis(500)
            .try_into()
            .expect("half a second is a valid idle timeout"),
    ));
    Arc::new(t)
}
