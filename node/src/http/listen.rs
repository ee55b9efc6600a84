//! The HTTP listener: accepts TCP connections, wraps each in TLS when the node serves HTTPS
//! ([`ServerTls`], whose certificate is reloaded when its files change), and serves it with
//! hyper under deadlines a slow client cannot stretch: the TLS handshake and every request
//! head must arrive in time (an idle keep-alive connection is closed the same way), and
//! bodies are timed by the router's body timeout.

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// How long a connection has for its TLS handshake and for each request's head.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// The TLS handshake, from the accept.
    pub handshake: Duration,
    /// A request's head (and the wait for the next request on a kept-alive connection).
    pub header_read: Duration,
}

/// Serves `app` on `listener` until `stopped`; connections in flight are then asked to
/// finish their current request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerTls>>,
    deadlines: Deadlines,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: let some connections end first.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::until_set(&mut stopped) => return,
        };
        // Small request/response exchanges: do not let Nagle hold replies back.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            match acceptor {
                None => serve_one(tcp, remote, app, deadlines, stopped).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(deadlines.handshake, acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => serve_one(stream, remote, app, deadlines, stopped).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "tls handshake failed");
                            metrics::counter!(
                                crate::telemetry::names::HTTP_TLS_HANDSHAKE_FAILURES_TOTAL
                            )
                            .increment(1);
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "tls handshake timed out");
                            metrics::counter!(
                                crate::telemetry::names::HTTP_TLS_HANDSHAKE_FAILURES_TOTAL
                            )
                            .increment(1);
                        }
                    }
                }
            }
        });
    }
}

/// One connection, plain or TLS: HTTP/1.1 with upgrades (the signaling WebSocket), the
/// peer's address available to handlers as [`ConnectInfo`].
async fn serve_one<S>(
    stream: S,
    remote: SocketAddr,
    app: Router,
    deadlines: Deadlines,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.layer(axum::Extension(ConnectInfo(remote)));
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header_read);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = crate::until_set(&mut stopped) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "http connection ended with an error");
    }
}

/// Building the HTTPS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// rustls refused the certificate, the key or the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The HTTPS side of a node: a rustls server configuration whose certificate comes from
/// files that [`ServerTls::reload_if_changed`] reads again when they change.
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    cert: Arc<ReloadingCert>,
}

impl ServerTls {
    /// Loads the certificate chain and key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, ServerTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load_pair(&provider, cert, key)?;
        let reloading = Arc::new(ReloadingCert {
            provider: provider.clone(),
            paths: (cert.to_owned(), key.to_owned()),
            current: RwLock::new(loaded),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(reloading.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            cert: reloading,
        })
    }

    /// Reads the files again if either changed since they were last loaded; new
    /// connections then get the new certificate. A pair that does not load (half-written,
    /// mismatched) keeps the old one and is reported.
    pub fn reload_if_changed(&self) -> Result<bool, ServerTlsError> {
        self.cert.reload_if_changed()
    }

    /// Watches the files every `period` until `stopped`, reloading on change.
    pub async fn watch(
        self: Arc<Self>,
        period: Duration,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::every(period, stopped, || async {
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.paths.0.display(), "https certificate reloaded");
                    metrics::counter!(crate::telemetry::names::HTTP_TLS_RELOADS_TOTAL, "result" => "ok")
                        .increment(1);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "https certificate not reloaded; keeping the old one");
                    metrics::counter!(crate::telemetry::names::HTTP_TLS_RELOADS_TOTAL, "result" => "error")
                        .increment(1);
                }
            }
        })
        .await
    }
}

/// A certificate and key as loaded, and the files' modification times then.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

#[derive(Debug)]
struct ReloadingCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
    paths: (PathBuf, PathBuf),
    current: RwLock<Loaded>,
}

impl ReloadingCert {
    fn reload_if_changed(&self) -> Result<bool, ServerTlsError> {
        let (cert, key) = (&self.paths.0, &self.paths.1);
        let stamp = (modified(cert), modified(key));
        if self.current.read().unwrap_or_else(|e| e.into_inner()).stamp == stamp {
            return Ok(false);
        }
        let loaded = load_pair(&self.provider, cert, key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .clone(),
        )
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_pair(
    provider: &rustls::crypto::CryptoProvider,
    cert: &Path,
    key: &Path,
) -> Result<Loaded, ServerTlsError> {
    let stamp = (modified(cert), modified(key));
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ServerTlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let pem = |path: &Path, why: String| ServerTlsError::Pem {
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no certificate".into()));
    }
    let private =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem(key, e.to_string()))?;
    let signing = provider.key_provider.load_private_key(private)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match()?;
    Ok(Loaded {
        key: Arc::new(certified),
        stamp,
    })
}
