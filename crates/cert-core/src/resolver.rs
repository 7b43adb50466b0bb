//! Serving certificates to rustls from the in-memory [`Cache`]: no I/O on the handshake
//! path. All rustls server types the engine uses are kept in this module.

use std::fmt;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::Cache;

/// A [`ResolvesServerCert`] that answers from a [`Cache`]: the exact server name, then the
/// wildcard one level up, then an optional default for unknown names and handshakes
/// without SNI.
pub struct CertResolver {
    cache: Arc<Cache>,
    default_name: Option<String>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("default_name", &self.default_name)
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// A resolver over `cache` with no default certificate.
    pub fn new(cache: Arc<Cache>) -> Self {
        CertResolver {
            cache,
            default_name: None,
        }
    }

    /// Serves the certificate cached under `name` to clients that send no server name or
    /// one the cache does not know.
    pub fn with_default(mut self, name: impl Into<String>) -> Self {
        self.default_name = Some(name.into());
        self
    }

    /// The certificate this resolver serves for `server_name` (`None`: no SNI).
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        server_name
            .and_then(|name| self.cache.get(name))
            .or_else(|| {
                self.default_name
                    .as_deref()
                    .and_then(|name| self.cache.get(name))
            })
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(client_hello.server_name())
    }
}

/// The ALPN protocols [`server_config`] offers: HTTP/2 then HTTP/1.1.
pub const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A rustls server configuration serving from `resolver`, with the aws-lc-rs provider
/// chosen explicitly (no process-wide default is installed), safe default protocol
/// versions and ALPN `h2`, `http/1.1`. Push `b"acme-tls/1"` onto `alpn_protocols` for
/// TLS-ALPN-01 challenges.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A tokio-rustls acceptor for `config`.
pub fn acceptor(config: ServerConfig) -> tokio_rustls::TlsAcceptor {
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
