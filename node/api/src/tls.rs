//! How this process's clients trust a node's HTTPS certificate: the CA it was given
//! ([`install_ca`], from the CLI's `--ca` or `TETHER_CA`; pinned, so nothing else is
//! trusted), or, without one, the system's roots (a certificate from a public CA). Every
//! [`crate::Client`] and signaling socket built afterwards uses it; plain `http://` URLs
//! need none.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::{Arc, RwLock};

/// The trust could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA file held no certificate, or one that did not parse.
    #[error("CA certificate: {0}")]
    Pem(String),
    /// rustls refused a root or the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

static TRUST: RwLock<Option<Arc<rustls::ClientConfig>>> = RwLock::new(None);

/// Trusts exactly the CA certificates in `pem` for every client built from now on.
pub fn install_ca(pem: &[u8]) -> Result<(), TrustError> {
    let config = config_for(Some(pem))?;
    *TRUST.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(config));
    Ok(())
}

/// What clients trust now: the installed CA, else the system's roots.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    if let Some(config) = TRUST.read().unwrap_or_else(|e| e.into_inner()).clone() {
        return config;
    }
    let config = config_for(None).expect("the system roots always make a configuration");
    let config = Arc::new(config);
    *TRUST.write().unwrap_or_else(|e| e.into_inner()) = Some(config.clone());
    config
}

/// A client configuration trusting `ca_pem`'s certificates only, or the system's roots.
pub fn config_for(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TrustError::Pem(e.to_string()))?;
            if certs.is_empty() {
                return Err(TrustError::Pem("no certificate in the file".into()));
            }
            for cert in certs {
                roots.add(cert)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "a system root certificate was skipped");
            }
            let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A `reqwest` builder that trusts what this process's clients trust, for the few callers
/// that need raw HTTP (the tests, metric scrapes, WebDriver).
pub fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured((*client_config()).clone())
}

/// A default `reqwest` client with that trust.
pub fn http() -> reqwest::Client {
    http_builder()
        .build()
        .expect("a client with a ready TLS configuration always builds")
}
