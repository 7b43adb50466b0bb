//! [`HttpSource`]: certificates fetched per server name from an HTTP backend, kept in
//! memory for as long as the backend says, with an optional warm copy in any
//! [`Storage`](cert_core::Storage).
//!
//! `GET <url>?server_name=<sni>` answers:
//!
//! - `200` with a PEM bundle (chain and private key, in any order): checked (the key
//!   matches the leaf, the leaf's names cover the server name, it has not expired) and kept
//!   for the response's `Cache-Control` `s-maxage`, else `max-age`, else
//!   [`HttpSourceConfig::default_ttl`]; a fixed [`HttpSourceConfig::ttl`] overrides the
//!   header. Never beyond the certificate's own not-after.
//! - `204`: the backend has no certificate for that name; remembered for
//!   [`HttpSourceConfig::negative_ttl`], so the backend is not asked again until then.
//! - anything else, a timeout, or a bundle that fails its checks: an error, never
//!   remembered: the next handshake asks again.
//!
//! However many handshakes wait for one cold name, one request is made. It runs in a task
//! of its own, bounded by [`HttpSourceConfig::timeout`]: a client that goes away does not
//! cancel it for the others.
//!
//! The backend sends private keys, so a plain `http://` URL is refused unless its host is
//! this machine (`localhost` or a loopback address: the traffic never leaves it) or
//! [`HttpSourceConfig::allow_plain_http`] says so, and then a warning is logged.
//!
//! Warm-copy writes run in tasks of their own, at most
//! [`HttpSourceConfig::max_pending_writes`] at once: when storage is slower than new names
//! arrive, further copies are skipped (with a debug log) rather than piling up tasks.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use cert_core::rustls::sign::CertifiedKey;
use cert_core::{CertSource, keys};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Semaphore, broadcast};

use crate::SourceError;
use crate::backend::Backend;
use crate::bundle::normalize_name;

mod config;
mod entry;
mod events;
mod fetch;
mod warm;

pub use config::HttpSourceConfig;
pub use entry::EntryInfo;
pub use events::SourceEvent;

use entry::{Entry, State};
use fetch::Fetch;

/// What every clone of an [`HttpSource`] shares.
struct Inner {
    config: HttpSourceConfig,
    backend: Backend,
    prefix: String,
    entries: RwLock<HashMap<Box<str>, Entry>>,
    inflight: Mutex<HashMap<Box<str>, Fetch>>,
    /// One permit per warm-copy write or deletion in progress.
    writes: Arc<Semaphore>,
    events: broadcast::Sender<SourceEvent>,
}

/// Certificates fetched per server name from an HTTP backend and cached in memory; cheap
/// to clone (clones share the cache).
///
/// Serve them with [`CertResolver::with_source`](cert_core::CertResolver::with_source)
/// and fill the cache before the handshake goes on with
/// [`CertResolver::prepare`](cert_core::CertResolver::prepare) (or
/// [`HttpSource::prepare_handshake`]) as the preparation step of
/// [`accept_lazy`](cert_core::accept_lazy).
#[derive(Clone)]
pub struct HttpSource {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSource")
            .field("config", &self.inner.config)
            .field("entries", &self.len())
            .finish()
    }
}

impl HttpSource {
    /// A source for the backend `config` names. Fails on an unusable URL, header or root.
    pub fn new(config: HttpSourceConfig) -> Result<Self, SourceError> {
        let backend = Backend::new(
            &config.url,
            &config.query_parameter,
            config.headers.clone(),
            config.max_body,
            config.root_certificates.as_deref(),
            config.allow_plain_http,
        )?;
        let prefix = match &config.storage_prefix {
            Some(prefix) => {
                cert_core::validate_prefix(prefix)
                    .map_err(|err| SourceError::Config(err.to_string()))?;
                prefix.clone()
            }
            None => format!(
                "sources/http/{}",
                keys::safe_segment(&keys::issuer_key(&config.url))
            ),
        };
        let (events, _) = broadcast::channel(1024);
        let writes = Arc::new(Semaphore::new(config.max_pending_writes.max(1)));
        Ok(HttpSource {
            inner: Arc::new(Inner {
                config,
                backend,
                prefix,
                entries: RwLock::new(HashMap::new()),
                inflight: Mutex::new(HashMap::new()),
                writes,
                events,
            }),
        })
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SourceEvent> {
        self.inner.events.subscribe()
    }

    /// How many names are held in memory (negative entries included).
    pub fn len(&self) -> usize {
        self.inner.entries.read().len()
    }

    /// Whether no name is held in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage key of the warm copy for `server_name`.
    pub fn storage_key(&self, server_name: &str) -> String {
        self.inner.warm_key(server_name)
    }

    /// The request URL for `server_name`.
    pub fn request_url(&self, server_name: &str) -> String {
        self.inner.backend.url_for(server_name)
    }

    /// What is held in memory for `server_name`, fresh or not.
    pub fn entry(&self, server_name: &str) -> Option<EntryInfo> {
        let name = normalize_name(server_name)?;
        let entries = self.inner.entries.read();
        let entry = entries.get(name.as_str())?;
        Some(EntryInfo {
            negative: entry.cert.is_none(),
            expires: entry.expires,
            stale: entry.serve_until > entry.expires && SystemTime::now() >= entry.expires,
        })
    }

    /// Forgets `server_name` in memory (the warm copy stays); whether it was held.
    pub fn invalidate(&self, server_name: &str) -> bool {
        normalize_name(server_name)
            .is_some_and(|name| self.inner.entries.write().remove(name.as_str()).is_some())
    }

    /// The certificate held in memory for `server_name`, if fresh (or served stale). No
    /// I/O: this is what the handshake calls.
    pub fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize_name(server_name)?;
        let (found, result) = match self.inner.state(&name, SystemTime::now()) {
            State::Fresh(Some(cert)) => (Some(cert), "hit"),
            State::Fresh(None) | State::Missing => (None, "miss"),
            State::Stale { cert, .. } => (Some(cert), "stale"),
        };
        metrics::counter!(cert_core::metrics::names::SOURCE_LOOKUPS, "result" => result)
            .increment(1);
        found
    }

    /// The certificate for `server_name`: from memory when fresh, else from the warm copy
    /// or the backend. `Ok(None)`: the backend has none (`204`, remembered).
    pub async fn get(&self, server_name: &str) -> Result<Option<Arc<CertifiedKey>>, SourceError> {
        let name = normalize_name(server_name)
            .ok_or_else(|| SourceError::InvalidName(server_name.into()))?;
        match self.inner.state(&name, SystemTime::now()) {
            State::Fresh(cert) => Ok(cert),
            State::Stale { cert, retry_due } => {
                if retry_due {
                    // The fetch runs in its own task; serve stale meanwhile.
                    drop(self.start_fetch(&name)?);
                }
                Ok(Some(cert))
            }
            State::Missing => self.start_fetch(&name)?.await,
        }
    }

    /// The preparation step of [`accept_lazy`](cert_core::accept_lazy) when this source
    /// serves every name: fetches the certificate for `server_name` unless it is held.
    /// Failures are reported as [`SourceEvent`]s and the handshake goes on.
    pub async fn prepare_handshake(&self, server_name: Option<String>) {
        if let Some(name) = server_name {
            CertSource::prepare(self, &name).await;
        }
    }
}

#[async_trait::async_trait]
impl CertSource for HttpSource {
    fn lookup(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        HttpSource::lookup(self, server_name)
    }

    async fn prepare(&self, server_name: &str) {
        if let Err(err) = self.get(server_name).await {
            tracing::debug!(server_name, error = %err, "no sourced certificate");
        }
    }
}
