//! Serving certificates to rustls from the in-memory [`Cache`]: no I/O on the handshake
//! path. All rustls server types the engine uses are kept in this module.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::Cache;
use crate::challenge::{ACME_TLS_ALPN, Challenges};
use crate::refusals::RefusalLog;

/// Certificates that come from somewhere other than the resolver's own [`Cache`] (an HTTP
/// backend, a certificate generator, ...), consulted by [`CertResolver`] after its cache.
///
/// A source splits its work the way rustls wants it: [`prepare`](CertSource::prepare) does
/// the I/O before the handshake continues (see [`CertResolver::prepare`] and
/// [`accept_lazy`]), and [`lookup`](CertSource::lookup), called during the handshake,
/// only reads memory.
#[async_trait]
pub trait CertSource: Send + Sync + 'static {
    /// The certificate this source holds in memory for `server_name`, if any. Runs on the
    /// handshake path: no I/O, no waiting.
    fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>>;

    /// Makes the certificate for `server_name` available to [`lookup`](CertSource::lookup)
    /// when the source can, doing whatever I/O that needs. Failures are the source's to
    /// report (logs, events); the handshake then goes on without this source.
    async fn prepare(&self, server_name: &str);
}

/// A [`ResolvesServerCert`] that answers from a [`Cache`]: the exact server name, then the
/// wildcard one level up, then its [`CertSource`]s in order, then an optional default for
/// unknown names and handshakes without SNI.
///
/// A handshake it has no certificate for is refused and logged with `tracing` at info
/// level, once per server name in a window of a few minutes and at most a few lines per
/// window (the rest are counted, and the count is logged): clients sending random names
/// can flood neither the logs nor memory. The resolvers of one
/// [`CertManager`](crate::CertManager) share that budget with its on-demand refusals.
pub struct CertResolver {
    cache: Arc<Cache>,
    default_name: Option<String>,
    challenges: Option<Arc<Challenges>>,
    sources: Vec<Arc<dyn CertSource>>,
    refusals: Arc<RefusalLog>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("default_name", &self.default_name)
            .field("sources", &self.sources.len())
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    /// A resolver over `cache` with no default certificate.
    pub fn new(cache: Arc<Cache>) -> Self {
        CertResolver {
            cache,
            default_name: None,
            challenges: None,
            sources: Vec::new(),
            refusals: Arc::default(),
        }
    }

    /// Logs refused handshakes through `refusals`, shared with others.
    pub(crate) fn with_refusal_log(mut self, refusals: Arc<RefusalLog>) -> Self {
        self.refusals = refusals;
        self
    }

    /// Also serves certificates from `source`, for names the cache does not hold (sources
    /// are consulted in the order they were added).
    pub fn with_source(mut self, source: Arc<dyn CertSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// The preparation step for [`accept_lazy`] that fills the sources: when the cache
    /// and no source yet hold a certificate for `server_name`, asks each source in turn to
    /// [`prepare`](CertSource::prepare) one, stopping at the first that has it.
    pub async fn prepare(&self, server_name: Option<&str>) {
        let Some(name) = server_name else {
            return;
        };
        if self.cache.get(name).is_some() || self.sources.iter().any(|s| s.lookup(name).is_some()) {
            return;
        }
        for source in &self.sources {
            source.prepare(name).await;
            if source.lookup(name).is_some() {
                return;
            }
        }
    }

    /// Answers TLS-ALPN-01 validation handshakes (ALPN `acme-tls/1`, and only those) with
    /// the challenge certificates of `challenges`. Add `acme-tls/1` to the server
    /// configuration's ALPN protocols too.
    pub fn with_challenges(mut self, challenges: Arc<Challenges>) -> Self {
        self.challenges = Some(challenges);
        self
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
            .and_then(|name| {
                self.cache
                    .get(name)
                    .or_else(|| self.sources.iter().find_map(|s| s.lookup(name)))
            })
            .or_else(|| {
                self.default_name
                    .as_deref()
                    .and_then(|name| self.cache.get(name))
            })
    }

    /// [`lookup`](CertResolver::lookup) for a handshake: a refusal is logged (within the
    /// budget).
    fn serve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = self.lookup(server_name);
        crate::metrics::cache_lookup(found.is_some());
        if found.is_none() {
            self.refusals.refused(server_name, &NOTHING_TO_SERVE);
        }
        found
    }
}

/// Why [`CertResolver`] refuses a handshake.
const NOTHING_TO_SERVE: &str = "no managed, sourced or default certificate";

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = client_hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // A validation handshake gets the challenge certificate or nothing.
            let name = client_hello.server_name()?;
            return self.challenges.as_ref()?.tls_alpn01_cert(name);
        }
        self.serve(client_hello.server_name())
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

/// Accepts a TLS connection in two steps, for when choosing the certificate needs I/O:
/// reads the ClientHello, awaits `prepare` with the server name the client asked for
/// (load a certificate from storage, obtain one on demand, ...), then completes the
/// handshake with `config`. The resolver itself stays an in-memory lookup.
pub async fn accept_lazy<IO, F, Fut>(
    io: IO,
    config: Arc<ServerConfig>,
    prepare: F,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: FnOnce(Option<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    accept_lazy_hello(io, config, |hello| prepare(hello.server_name)).await
}

/// What [`accept_lazy_hello`] tells its preparation step about the ClientHello.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HelloInfo {
    /// The server name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The ALPN protocols the client offered.
    pub alpn: Vec<Vec<u8>>,
}

impl HelloInfo {
    /// Whether this is a TLS-ALPN-01 validation handshake (ALPN `acme-tls/1`).
    pub fn is_acme_tls_alpn(&self) -> bool {
        self.alpn.iter().any(|p| p == ACME_TLS_ALPN)
    }
}

/// Like [`accept_lazy`], with the ClientHello's server name and ALPN protocols: lets the
/// preparation step load a TLS-ALPN-01 challenge certificate placed by another node
/// ([`Challenges::prepare_tls_alpn01`]) when [`HelloInfo::is_acme_tls_alpn`].
pub async fn accept_lazy_hello<IO, F, Fut>(
    io: IO,
    config: Arc<ServerConfig>,
    prepare: F,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: FnOnce(HelloInfo) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
    let hello = start.client_hello();
    let info = HelloInfo {
        server_name: hello.server_name().map(str::to_owned),
        alpn: hello
            .alpn()
            .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
            .unwrap_or_default(),
    };
    prepare(info).await;
    start.into_stream(config).await
}

/// A tokio-rustls acceptor for `config`.
pub fn acceptor(config: ServerConfig) -> tokio_rustls::TlsAcceptor {
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::dummy_certified_key;

    /// A source holding one name once prepared, counting preparations.
    struct OneName {
        name: &'static str,
        tag: u8,
        ready: parking_lot::Mutex<bool>,
        prepared: AtomicUsize,
    }

    #[async_trait]
    impl CertSource for OneName {
        fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
            (*self.ready.lock() && server_name == self.name).then(|| dummy_certified_key(self.tag))
        }

        async fn prepare(&self, server_name: &str) {
            self.prepared.fetch_add(1, Ordering::SeqCst);
            if server_name == self.name {
                *self.ready.lock() = true;
            }
        }
    }

    fn source(name: &'static str, tag: u8) -> Arc<OneName> {
        Arc::new(OneName {
            name,
            tag,
            ready: parking_lot::Mutex::new(false),
            prepared: AtomicUsize::new(0),
        })
    }

    /// The `server_name` of every refusal logged, and `None` for one without a name.
    #[derive(Default)]
    struct Refusals(parking_lot::Mutex<Vec<Option<String>>>);

    struct ServerName(Option<String>);

    impl tracing::field::Visit for ServerName {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "server_name" {
                self.0 = Some(value.to_owned());
            }
        }

        fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn fmt::Debug) {}
    }

    impl tracing::Subscriber for Refusals {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }

        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == tracing::Level::INFO {
                let mut name = ServerName(None);
                event.record(&mut name);
                self.0.lock().push(name.0);
            }
        }

        fn enter(&self, _: &tracing::span::Id) {}

        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// What `run` logged through `tracing` at info level, on this thread.
    fn logged(run: impl FnOnce()) -> Vec<Option<String>> {
        let refusals = Arc::new(Refusals::default());
        tracing::subscriber::with_default(Arc::clone(&refusals), run);
        refusals.0.lock().clone()
    }

    #[test]
    fn refusals_are_logged_once_per_name() {
        let cache = Arc::new(Cache::new(10));
        cache.insert("known.example", dummy_certified_key(1));
        let resolver = CertResolver::new(cache);
        let lines = logged(|| {
            assert!(resolver.serve(Some("known.example")).is_some());
            for _ in 0..3 {
                assert!(resolver.serve(Some("unknown.example")).is_none());
                assert!(resolver.serve(None).is_none());
            }
        });
        assert_eq!(lines, [Some("unknown.example".to_owned()), None]);
        // Names past the window's budget are not logged.
        let flood = logged(|| {
            for i in 0..1_000 {
                resolver.serve(Some(&format!("n{i}.example")));
            }
        });
        assert_eq!(flood.len(), crate::refusals::LINES_PER_WINDOW - 2);
    }

    #[test]
    fn the_resolvers_of_a_manager_share_their_budget() {
        let manager = crate::CertManager::new(
            Arc::new(crate::MemoryStorage::new()),
            Arc::new(Cache::new(10)),
            vec![],
            crate::ManagerConfig::default(),
        );
        let (first, second) = (manager.resolver(), manager.resolver());
        let lines = logged(|| {
            first.serve(Some("unknown.example"));
            second.serve(Some("unknown.example"));
        });
        assert_eq!(lines.len(), 1);
    }

    #[tokio::test]
    async fn cache_then_sources_in_order_then_default() {
        let cache = Arc::new(Cache::new(10));
        cache.insert("managed.example", dummy_certified_key(1));
        cache.insert("fallback.example", dummy_certified_key(9));
        let first = source("sourced.example", 2);
        let second = source("sourced.example", 3);
        let resolver = CertResolver::new(Arc::clone(&cache))
            .with_source(first.clone())
            .with_source(second.clone())
            .with_default("fallback.example");
        let tag = |name: Option<&str>| resolver.lookup(name).map(|c| c.cert[0].as_ref()[0]);

        assert_eq!(tag(Some("sourced.example")), Some(9), "not prepared yet");
        resolver.prepare(Some("managed.example")).await;
        assert_eq!(first.prepared.load(Ordering::SeqCst), 0, "the cache had it");
        resolver.prepare(Some("sourced.example")).await;
        assert_eq!(first.prepared.load(Ordering::SeqCst), 1);
        assert_eq!(
            second.prepared.load(Ordering::SeqCst),
            0,
            "the first had it"
        );
        assert_eq!(tag(Some("managed.example")), Some(1));
        assert_eq!(tag(Some("sourced.example")), Some(2));
        assert_eq!(tag(Some("other.example")), Some(9));
        assert_eq!(tag(None), Some(9));

        resolver.prepare(Some("other.example")).await;
        assert_eq!(first.prepared.load(Ordering::SeqCst), 2);
        assert_eq!(second.prepared.load(Ordering::SeqCst), 1, "tried in turn");
        resolver.prepare(None).await;
        assert_eq!(first.prepared.load(Ordering::SeqCst), 2);
    }
}
