//! [`HttpSourceConfig`]: how an [`HttpSource`](super::HttpSource) works, built with
//! [`HttpSourceConfig::new`] and the `with_*` methods.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cert_core::Storage;
use cert_core::rustls::pki_types::CertificateDer;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use crate::SourceError;

/// How an [`HttpSource`](super::HttpSource) works. Build with [`HttpSourceConfig::new`]
/// and the `with_*` methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpSourceConfig {
    /// The backend URL, `https://` (or `http://` to this machine, or with
    /// [`allow_plain_http`](Self::allow_plain_http)); may carry a query of its own. No user
    /// information: send credentials in a header ([`with_header`](Self::with_header)).
    pub url: String,
    /// Whether a plain `http://` URL to another machine is accepted (private keys then
    /// travel unencrypted). Default false.
    pub allow_plain_http: bool,
    /// The query parameter that carries the server name. Default `server_name`.
    pub query_parameter: String,
    /// Headers sent with every request (values are marked sensitive, never printed).
    pub(super) headers: HeaderMap,
    /// How long one fetch may take, storage look-up included. Default 10 s.
    pub timeout: Duration,
    /// How long an entry lives when the response has no `s-maxage` or `max-age`. Default
    /// 1 hour.
    pub default_ttl: Duration,
    /// A fixed entry lifetime that overrides the response's `Cache-Control`.
    pub ttl: Option<Duration>,
    /// How long a `204` is remembered. Default 5 minutes.
    pub negative_ttl: Duration,
    /// When set, an expired certificate keeps being served for up to this long (never past
    /// its not-after) while the backend fails; see
    /// [`SourceEvent::ServingStale`](super::SourceEvent::ServingStale).
    pub stale_if_error: Option<Duration>,
    /// While serving a stale certificate, the backend is asked again at most this often.
    /// Default 5 s.
    pub stale_retry: Duration,
    /// The most names held in memory. Default 10,000.
    pub capacity: usize,
    /// The largest response body accepted. Default 1 MiB.
    pub max_body: usize,
    /// Roots trusted for an `https://` backend; `None` (the default) uses the platform's
    /// certificate verifier.
    pub root_certificates: Option<Vec<CertificateDer<'static>>>,
    /// Where the warm copy is kept; `None` (the default) keeps none.
    pub storage: Option<Arc<dyn Storage>>,
    /// The storage prefix of the warm copy. Default `sources/http/<backend URL as one
    /// segment>`.
    pub storage_prefix: Option<String>,
    /// The most warm-copy writes and deletions in progress at once; beyond it a new one is
    /// skipped (the certificate is still served, the next fetch writes it). Default 64.
    pub max_pending_writes: usize,
}

impl fmt::Debug for HttpSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL's query may hold a token: only scheme, host and path are shown.
        let url = self.url.split(['?', '#']).next().unwrap_or_default();
        let headers: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("HttpSourceConfig")
            .field("url", &url)
            .field("allow_plain_http", &self.allow_plain_http)
            .field("query_parameter", &self.query_parameter)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("default_ttl", &self.default_ttl)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("capacity", &self.capacity)
            .field("storage", &self.storage)
            .field("max_pending_writes", &self.max_pending_writes)
            .finish_non_exhaustive()
    }
}

impl HttpSourceConfig {
    /// The defaults for the backend at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        HttpSourceConfig {
            url: url.into(),
            allow_plain_http: false,
            query_parameter: "server_name".to_owned(),
            headers: HeaderMap::new(),
            timeout: Duration::from_secs(10),
            default_ttl: Duration::from_secs(3600),
            ttl: None,
            negative_ttl: Duration::from_secs(300),
            stale_if_error: None,
            stale_retry: Duration::from_secs(5),
            capacity: 10_000,
            max_body: 1024 * 1024,
            root_certificates: None,
            storage: None,
            storage_prefix: None,
            max_pending_writes: 64,
        }
    }

    /// Accepts a plain `http://` URL to another machine. Certificates and their private
    /// keys then cross the network unencrypted: only for a network that is private end to
    /// end. A warning is logged when the source is built.
    pub fn allow_plain_http(mut self) -> Self {
        self.allow_plain_http = true;
        self
    }

    /// Runs at most `limit` warm-copy writes at once (at least 1).
    pub fn with_max_pending_writes(mut self, limit: usize) -> Self {
        self.max_pending_writes = limit.max(1);
        self
    }

    /// Sends the server name in this query parameter.
    pub fn with_query_parameter(mut self, name: impl Into<String>) -> Self {
        self.query_parameter = name.into();
        self
    }

    /// Sends this header with every request (an `Authorization` token, say). The value is
    /// never printed.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, SourceError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SourceError::Config(format!("invalid header name {name:?}")))?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            SourceError::Config(format!("invalid value for header {}", name.as_str()))
        })?;
        value.set_sensitive(true);
        self.headers.append(name, value);
        Ok(self)
    }

    /// Gives up on a fetch after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Keeps entries this long when the response says nothing.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Keeps entries exactly this long, whatever the response says.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Remembers a `204` this long.
    pub fn with_negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Serves an expired certificate for up to `grace` while the backend fails.
    pub fn with_stale_if_error(mut self, grace: Duration) -> Self {
        self.stale_if_error = Some(grace);
        self
    }

    /// Asks the backend at most this often while serving a stale certificate.
    pub fn with_stale_retry(mut self, interval: Duration) -> Self {
        self.stale_retry = interval;
        self
    }

    /// Holds at most `capacity` names in memory (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Accepts response bodies up to `limit` bytes.
    pub fn with_max_body(mut self, limit: usize) -> Self {
        self.max_body = limit;
        self
    }

    /// Trusts exactly these roots for an `https://` backend.
    pub fn with_root_certificates(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.root_certificates = Some(roots);
        self
    }

    /// Keeps a warm copy of every fetched certificate in `storage` (wrap it in
    /// `Encrypted` to keep the keys sealed).
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Keeps the warm copy under this storage prefix.
    pub fn with_storage_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.storage_prefix = Some(prefix.into());
        self
    }
}
