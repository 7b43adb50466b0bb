//! [`HttpSource`]: certificates fetched per server name from an HTTP backend, kept in
//! memory for as long as the backend says, with an optional warm copy in any
//! [`Storage`].
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cert_core::rustls::pki_types::CertificateDer;
use cert_core::rustls::sign::CertifiedKey;
use cert_core::{CertSource, CertificateError, Storage, StorageExt, keys};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use zeroize::Zeroizing;

use crate::SourceError;
use crate::backend::{Backend, freshness};
use crate::bundle::{Validated, covers, normalize_name, validate_pem};

/// The shortest time an entry is kept, so the handshake that fetched it is served even
/// when the backend says `max-age=0`.
const MIN_TTL: Duration = Duration::from_secs(1);

/// How an [`HttpSource`] works. Build with [`HttpSourceConfig::new`] and the `with_*`
/// methods.
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
    headers: HeaderMap,
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
    /// its not-after) while the backend fails; see [`SourceEvent::ServingStale`].
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

/// What an [`HttpSource`] reports to subscribers ([`HttpSource::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceEvent {
    /// The backend sent a certificate for `name`, kept until `expires`.
    Fetched {
        /// The server name.
        name: String,
        /// When the entry expires.
        expires: SystemTime,
    },
    /// The backend has no certificate for `name` (`204`); it is not asked again until
    /// `until`.
    NotFound {
        /// The server name.
        name: String,
        /// When the negative entry expires.
        until: SystemTime,
    },
    /// The warm copy of `name` was loaded from storage, with its original expiry.
    Loaded {
        /// The server name.
        name: String,
        /// When the entry expires.
        expires: SystemTime,
    },
    /// The warm copy of `name` was written to storage.
    Persisted {
        /// The server name.
        name: String,
    },
    /// Fetching `name` failed; nothing was remembered.
    Failed {
        /// The server name.
        name: String,
        /// What went wrong.
        error: String,
    },
    /// Fetching `name` failed and its expired certificate is served instead, until
    /// `until` at the latest.
    ServingStale {
        /// The server name.
        name: String,
        /// What went wrong.
        error: String,
        /// The last moment the stale certificate may be served.
        until: SystemTime,
    },
    /// Reading or writing the warm copy of `name` failed (the fetch itself went on).
    StorageFailed {
        /// The server name.
        name: String,
        /// What went wrong.
        error: String,
    },
}

/// What the source holds for one name ([`HttpSource::entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// Whether this is a remembered `204` (no certificate).
    pub negative: bool,
    /// When the entry stops being fresh.
    pub expires: SystemTime,
    /// Whether an expired certificate is being served because the backend fails.
    pub stale: bool,
}

struct Entry {
    /// `None`: a remembered `204`.
    cert: Option<Arc<CertifiedKey>>,
    /// Fresh until then.
    expires: SystemTime,
    /// Served until then (later than `expires` only while stale-if-error applies).
    serve_until: SystemTime,
    /// The certificate's not-after.
    not_after: SystemTime,
    /// While stale: when the backend may be asked again.
    retry_at: SystemTime,
}

enum State {
    Fresh(Option<Arc<CertifiedKey>>),
    Stale {
        cert: Arc<CertifiedKey>,
        retry_due: bool,
    },
    Missing,
}

type Fetch = Shared<BoxFuture<'static, Result<Option<Arc<CertifiedKey>>, SourceError>>>;

/// Where a fetched certificate came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Backend,
    Storage,
}

enum Fetched {
    Cert {
        validated: Validated,
        pem: Zeroizing<String>,
        expires: SystemTime,
        origin: Origin,
    },
    Negative,
}

/// A failed fetch, with the expired warm copy found on the way, if any.
struct Failure {
    error: SourceError,
    stale: Option<WarmCopy>,
}

impl From<SourceError> for Failure {
    fn from(error: SourceError) -> Self {
        Failure { error, stale: None }
    }
}

struct WarmCopy {
    validated: Validated,
    pem: Zeroizing<String>,
    expires: SystemTime,
}

#[derive(Serialize)]
struct WarmRecordRef<'a> {
    server_name: &'a str,
    expires_ms: u64,
    pem: &'a str,
}

#[derive(Deserialize)]
struct WarmRecord {
    server_name: String,
    expires_ms: u64,
    pem: String,
}

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

fn to_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
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
        format!(
            "{}/{}.json",
            self.inner.prefix,
            keys::safe_name(server_name)
        )
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
        match self.inner.state(&name, SystemTime::now()) {
            State::Fresh(cert) => cert,
            State::Stale { cert, .. } => Some(cert),
            State::Missing => None,
        }
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

    /// Loads every unexpired warm copy from storage into memory, keeping each one's
    /// original expiry, and returns how many were loaded. Nothing to do without storage.
    pub async fn warm_from_storage(&self) -> Result<usize, SourceError> {
        let Some(storage) = &self.inner.config.storage else {
            return Ok(0);
        };
        let found = match storage.list(&self.inner.prefix, true).await {
            Ok(found) => found,
            Err(cert_core::Error::NotFound { .. }) => return Ok(0),
            Err(err) => return Err(SourceError::Storage(Arc::new(err))),
        };
        let mut loaded = 0;
        for key in found {
            let Some(bytes) = storage
                .load_opt(&key)
                .await
                .map_err(|err| SourceError::Storage(Arc::new(err)))?
            else {
                continue;
            };
            let bytes = Zeroizing::new(bytes);
            let (name, copy) = match parse_warm(&key, &bytes, None) {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(key, error = %err, "unusable warm copy skipped");
                    continue;
                }
            };
            let now = SystemTime::now();
            if copy.expires <= now {
                continue;
            }
            let mut entries = self.inner.entries.write();
            if entries
                .get(name.as_str())
                .is_some_and(|e| e.expires >= copy.expires)
            {
                continue;
            }
            self.inner.put(
                &mut entries,
                &name,
                Entry::positive(&copy.validated, copy.expires),
                now,
            );
            drop(entries);
            self.inner.emit(SourceEvent::Loaded {
                name,
                expires: copy.expires,
            });
            loaded += 1;
        }
        Ok(loaded)
    }

    /// The fetch for `name` in flight, or a new one in a task of its own.
    fn start_fetch(&self, name: &str) -> Result<Fetch, SourceError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| SourceError::Config("a Tokio runtime is required".into()))?;
        let mut inflight = self.inner.inflight.lock();
        if let Some(fetch) = inflight.get(name) {
            return Ok(fetch.clone());
        }
        // A fetch that just finished published its entry before leaving `inflight`.
        if let State::Fresh(cert) = self.inner.state(name, SystemTime::now()) {
            return Ok(futures::future::ready(Ok(cert)).boxed().shared());
        }
        let task = runtime.spawn(Arc::clone(&self.inner).run_fetch(name.to_owned()));
        let fetch = async move { task.await.unwrap_or(Err(SourceError::Aborted)) }
            .boxed()
            .shared();
        inflight.insert(name.into(), fetch.clone());
        Ok(fetch)
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

impl Entry {
    fn positive(validated: &Validated, expires: SystemTime) -> Self {
        Entry {
            cert: Some(Arc::clone(&validated.certified)),
            expires,
            serve_until: expires,
            not_after: validated.not_after,
            retry_at: expires,
        }
    }

    fn negative(until: SystemTime) -> Self {
        Entry {
            cert: None,
            expires: until,
            serve_until: until,
            not_after: until,
            retry_at: until,
        }
    }
}

/// Reads a warm copy; `expected` is the server name it must be for, when known.
fn parse_warm(
    key: &str,
    bytes: &[u8],
    expected: Option<&str>,
) -> Result<(String, WarmCopy), SourceError> {
    let record: WarmRecord = serde_json::from_slice(bytes)
        .map_err(|err| SourceError::Storage(Arc::new(cert_core::Error::corrupt(key, err))))?;
    let pem = Zeroizing::new(record.pem);
    let name = normalize_name(&record.server_name)
        .ok_or_else(|| SourceError::InvalidName(record.server_name.clone()))?;
    if expected.is_some_and(|expected| expected != name) {
        return Err(SourceError::NameMismatch { name });
    }
    let validated = validate_pem(&pem, &pem)?;
    if !validated.covers(&name) {
        return Err(SourceError::NameMismatch { name });
    }
    let expires = from_millis(record.expires_ms).min(validated.not_after);
    Ok((
        name,
        WarmCopy {
            validated,
            pem,
            expires,
        },
    ))
}

impl Inner {
    fn emit(&self, event: SourceEvent) {
        let _ = self.events.send(event);
    }

    fn state(&self, name: &str, now: SystemTime) -> State {
        let entries = self.entries.read();
        match entries.get(name) {
            None => State::Missing,
            Some(entry) if now < entry.expires => State::Fresh(entry.cert.clone()),
            Some(entry) => match &entry.cert {
                Some(cert) if now < entry.serve_until => State::Stale {
                    cert: Arc::clone(cert),
                    retry_due: now >= entry.retry_at,
                },
                _ => State::Missing,
            },
        }
    }

    /// Stores `entry` under `name`, making room when full: first by dropping what can no
    /// longer be served, then the entry that would stop being served soonest.
    fn put(
        &self,
        entries: &mut HashMap<Box<str>, Entry>,
        name: &str,
        entry: Entry,
        now: SystemTime,
    ) {
        if !entries.contains_key(name) && entries.len() >= self.config.capacity {
            entries.retain(|_, e| now < e.serve_until);
            while entries.len() >= self.config.capacity {
                let Some(victim) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.serve_until)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&victim);
            }
        }
        entries.insert(name.into(), entry);
    }

    async fn run_fetch(
        self: Arc<Self>,
        name: String,
    ) -> Result<Option<Arc<CertifiedKey>>, SourceError> {
        let timeout = self.config.timeout;
        let result = match tokio::time::timeout(timeout, self.fetch(&name)).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::Timeout(timeout).into()),
        };
        let now = SystemTime::now();
        let mut inflight = self.inflight.lock();
        let answer = match result {
            Ok(Fetched::Cert {
                validated,
                pem,
                expires,
                origin,
            }) => {
                let cert = Arc::clone(&validated.certified);
                self.put(
                    &mut self.entries.write(),
                    &name,
                    Entry::positive(&validated, expires),
                    now,
                );
                match origin {
                    Origin::Backend => {
                        self.emit(SourceEvent::Fetched {
                            name: name.clone(),
                            expires,
                        });
                        self.persist(&name, pem, expires);
                    }
                    Origin::Storage => self.emit(SourceEvent::Loaded {
                        name: name.clone(),
                        expires,
                    }),
                }
                Ok(Some(cert))
            }
            Ok(Fetched::Negative) => {
                let until = now + self.config.negative_ttl;
                self.put(
                    &mut self.entries.write(),
                    &name,
                    Entry::negative(until),
                    now,
                );
                self.emit(SourceEvent::NotFound {
                    name: name.clone(),
                    until,
                });
                self.forget_warm(&name);
                Ok(None)
            }
            Err(Failure { error, stale }) => {
                self.emit(SourceEvent::Failed {
                    name: name.clone(),
                    error: error.to_string(),
                });
                match self.serve_stale(&name, stale, &error, now) {
                    Some(cert) => Ok(Some(cert)),
                    None => Err(error),
                }
            }
        };
        inflight.remove(name.as_str());
        answer
    }

    /// After a failed fetch: the expired certificate to keep serving, when stale-if-error
    /// allows it (the one in memory, else the expired warm copy found in storage).
    fn serve_stale(
        &self,
        name: &str,
        warm: Option<WarmCopy>,
        error: &SourceError,
        now: SystemTime,
    ) -> Option<Arc<CertifiedKey>> {
        let grace = self.config.stale_if_error?;
        let mut entries = self.entries.write();
        if entries.get(name).is_none_or(|e| e.cert.is_none()) {
            let warm = warm?;
            self.put(
                &mut entries,
                name,
                Entry::positive(&warm.validated, warm.expires),
                now,
            );
        }
        let entry = entries.get_mut(name)?;
        let cert = entry.cert.clone()?;
        let until = (entry.expires + grace).min(entry.not_after);
        if now >= until {
            return None;
        }
        entry.serve_until = until;
        entry.retry_at = now + self.config.stale_retry;
        drop(entries);
        tracing::warn!(name, error = %error, "serving an expired certificate while the backend fails");
        self.emit(SourceEvent::ServingStale {
            name: name.to_owned(),
            error: error.to_string(),
            until,
        });
        Some(cert)
    }

    /// The warm copy if fresh, else the backend's answer.
    async fn fetch(&self, name: &str) -> Result<Fetched, Failure> {
        let mut stale = None;
        if let Some(storage) = &self.config.storage {
            let key = format!("{}/{}.json", self.prefix, keys::safe_name(name));
            match storage.load_opt(&key).await {
                Ok(Some(bytes)) => {
                    let bytes = Zeroizing::new(bytes);
                    match parse_warm(&key, &bytes, Some(name)) {
                        Ok((_, copy)) if copy.expires > SystemTime::now() => {
                            return Ok(Fetched::Cert {
                                validated: copy.validated,
                                pem: copy.pem,
                                expires: copy.expires,
                                origin: Origin::Storage,
                            });
                        }
                        Ok((_, copy)) => stale = Some(copy),
                        Err(err) => self.emit(SourceEvent::StorageFailed {
                            name: name.to_owned(),
                            error: err.to_string(),
                        }),
                    }
                }
                Ok(None) => {}
                Err(err) => self.emit(SourceEvent::StorageFailed {
                    name: name.to_owned(),
                    error: err.to_string(),
                }),
            }
        }
        self.fetch_backend(name)
            .await
            .map_err(|error| Failure { error, stale })
    }

    async fn fetch_backend(&self, name: &str) -> Result<Fetched, SourceError> {
        let answer = self.backend.get(name).await?;
        match answer.status {
            200 => {
                let text = std::str::from_utf8(&answer.body).map_err(|_| {
                    SourceError::Bundle(CertificateError::Chain("the body is not PEM text".into()))
                })?;
                let pem = Zeroizing::new(text.to_owned());
                let validated = validate_pem(&pem, &pem)?;
                if !covers(&validated.names, name) {
                    return Err(SourceError::NameMismatch { name: name.into() });
                }
                let now = SystemTime::now();
                if validated.not_after <= now {
                    return Err(SourceError::Expired { name: name.into() });
                }
                let ttl = self
                    .config
                    .ttl
                    .or_else(|| answer.cache_control.as_deref().and_then(freshness))
                    .unwrap_or(self.config.default_ttl)
                    .max(MIN_TTL);
                let expires = now
                    .checked_add(ttl)
                    .unwrap_or(validated.not_after)
                    .min(validated.not_after);
                Ok(Fetched::Cert {
                    validated,
                    pem,
                    expires,
                    origin: Origin::Backend,
                })
            }
            204 => Ok(Fetched::Negative),
            status => Err(SourceError::Status { status }),
        }
    }

    /// Writes the warm copy in a task of its own: the handshakes waiting for this fetch
    /// are not held up by storage.
    fn persist(self: &Arc<Self>, name: &str, pem: Zeroizing<String>, expires: SystemTime) {
        let Some(storage) = self.config.storage.clone() else {
            return;
        };
        let Some(permit) = self.write_permit(name) else {
            return;
        };
        let inner = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            let record = WarmRecordRef {
                server_name: &name,
                expires_ms: to_millis(expires),
                pem: &pem,
            };
            let result = match serde_json::to_vec(&record) {
                Ok(bytes) => {
                    let bytes = Zeroizing::new(bytes);
                    let key = format!("{}/{}.json", inner.prefix, keys::safe_name(&name));
                    storage.store(&key, &bytes).await.map_err(|e| e.to_string())
                }
                Err(err) => Err(err.to_string()),
            };
            match result {
                Ok(()) => inner.emit(SourceEvent::Persisted { name }),
                Err(error) => {
                    tracing::warn!(name, error, "could not store the warm copy");
                    inner.emit(SourceEvent::StorageFailed { name, error });
                }
            }
        });
    }

    /// A permit for one more warm-copy task, or `None` (logged) when storage is already
    /// busy with as many as allowed: skipping a copy costs one backend request later,
    /// while tasks without bound would grow with every new name a flood of handshakes
    /// brings.
    fn write_permit(&self, name: &str) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.writes).try_acquire_owned().ok();
        if permit.is_none() {
            tracing::debug!(
                name,
                "too many warm-copy writes pending; this one is skipped"
            );
        }
        permit
    }

    /// Deletes the warm copy of a name the backend no longer has, in a task of its own.
    fn forget_warm(self: &Arc<Self>, name: &str) {
        let Some(storage) = self.config.storage.clone() else {
            return;
        };
        let Some(permit) = self.write_permit(name) else {
            return;
        };
        let key = format!("{}/{}.json", self.prefix, keys::safe_name(name));
        tokio::spawn(async move {
            let _permit = permit;
            match storage.delete(&key).await {
                Ok(()) | Err(cert_core::Error::NotFound { .. }) => {}
                Err(err) => tracing::warn!(key, error = %err, "could not delete a warm copy"),
            }
        });
    }
}
