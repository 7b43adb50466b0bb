//! [`CertManager`]: obtains, stores, loads and renews certificates for a set of names,
//! coordinated across every node that shares the storage.
//!
//! For each managed name the manager serves from its [`Cache`]; it loads the certificate
//! from storage, or obtains one while holding the name's cluster lock, re-checking storage
//! once the lock is won (another node may have done the work meanwhile). A background task
//! renews inside the renewal window, with backoff on failure and fallback to the next
//! issuer; the old certificate keeps being served until a replacement exists.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use parking_lot::Mutex;
use rustls::sign::CertifiedKey;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::certificate::{
    CertificateMeta, KeyType, StoredCertificate, system_to_unix, unix_to_system,
};
use crate::issuer::{IssueError, IssueRequest, Issuer};
use crate::resolver::CertResolver;
use crate::{Cache, Error, LockOptions, Locker, StorageExt, Store, keys, lock, try_lock};

/// What the manager reports to subscribers ([`CertManager::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Starting to obtain a certificate for `name` from `issuer`.
    Obtaining {
        /// The server name.
        name: String,
        /// The issuer's identity.
        issuer: String,
    },
    /// A first certificate for `name` was obtained and stored.
    Obtained {
        /// The server name.
        name: String,
        /// The issuer's identity.
        issuer: String,
    },
    /// A replacement certificate for `name` was obtained and stored.
    Renewed {
        /// The server name.
        name: String,
        /// The issuer's identity.
        issuer: String,
    },
    /// A certificate for `name` was loaded from storage into the cache (at start, or
    /// because another node had obtained or renewed it).
    Loaded {
        /// The server name.
        name: String,
    },
    /// Obtaining or renewing failed; the next attempt is in `retry_in` (if any).
    Failed {
        /// The server name.
        name: String,
        /// The issuer's identity, when one failed.
        issuer: Option<String>,
        /// What went wrong.
        error: String,
        /// When the next attempt is due.
        retry_in: Option<Duration>,
    },
    /// `name` is no longer served or renewed by this node (see
    /// [`CertManager::unmanage`]).
    Evicted {
        /// The server name.
        name: String,
    },
    /// An expired certificate was removed from storage by cleaning.
    Cleaned {
        /// The storage prefix removed.
        prefix: String,
    },
}

/// Why a name could not be managed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The shared storage or its locks failed.
    #[error("storage: {0}")]
    Storage(#[from] Error),
    /// Every issuer failed; the last failure is kept.
    #[error("no issuer could issue a certificate for {name}: {last}")]
    Issue {
        /// The server name.
        name: String,
        /// The last issuer's failure.
        #[source]
        last: IssueError,
    },
    /// The manager has no issuer.
    #[error("no issuer configured")]
    NoIssuer,
    /// The name is not a valid server name.
    #[error("invalid server name {0:?}")]
    InvalidName(String),
}

/// Backoff between failed attempts for one name.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Pause after the first failure. Default 1 minute.
    pub initial: Duration,
    /// Longest pause. Default 6 hours.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(6 * 3600),
        }
    }
}

impl RetryPolicy {
    /// A policy with these bounds.
    pub fn new(initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            initial,
            max: max.max(initial),
        }
    }

    /// The pause after `failures` consecutive failures (1 or more): doubling from
    /// `initial`, capped at `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

/// How a [`CertManager`] works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// The key type of new certificates. Default ECDSA P-256.
    pub key_type: KeyType,
    /// Renew when this fraction of the lifetime is left (default a third; certificates
    /// living under ten days renew at half-life).
    pub renew_ratio: f64,
    /// How often the renewal task looks at the managed certificates. Default 10 minutes.
    pub check_interval: Duration,
    /// Backoff after failures.
    pub retry: RetryPolicy,
    /// How the per-name issuance locks are taken.
    pub lock: LockOptions,
    /// How many names [`CertManager::manage`] works on at once. Default 16.
    pub concurrency: usize,
    /// Cleaning removes certificates expired for longer than this. Default 30 days.
    pub clean_grace: Duration,
    /// Cleaning runs at most once per this interval across the cluster. Default 24 hours.
    pub clean_interval: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            key_type: KeyType::default(),
            renew_ratio: 1.0 / 3.0,
            check_interval: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            lock: LockOptions::default(),
            concurrency: 16,
            clean_grace: Duration::from_secs(30 * 86_400),
            clean_interval: Duration::from_secs(86_400),
        }
    }
}

impl ManagerConfig {
    /// With this key type.
    pub fn with_key_type(mut self, key_type: KeyType) -> Self {
        self.key_type = key_type;
        self
    }

    /// With this renewal-task period.
    pub fn with_check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// With this retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// With these lock options.
    pub fn with_lock(mut self, lock: LockOptions) -> Self {
        self.lock = lock;
        self
    }
}

/// An async decision whether a name may get a certificate on demand.
pub type OnDemandDecision =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

/// On-demand TLS: certificates obtained during the first handshake for a name not yet
/// managed ([`CertManager::prepare_handshake`]). A name is allowed only when the decision
/// function (if any) and the "ask" URL (if any) both allow it; with neither, nothing is
/// allowed. A denied name never touches storage or the CA.
#[derive(Clone)]
#[non_exhaustive]
pub struct OnDemandConfig {
    /// The decision function.
    pub decide: Option<OnDemandDecision>,
    /// A URL asked with `GET <url>?domain=<name>` (plain `http://`); any 2xx allows.
    pub ask_url: Option<String>,
    /// How long the ask URL may take. Default 5 s.
    pub ask_timeout: Duration,
    /// At most this many new certificates per `rate_interval`. Default 10.
    pub rate_limit: u32,
    /// The rate-limit interval. Default 1 minute.
    pub rate_interval: Duration,
    /// How long a handshake waits for its certificate. Default 60 s.
    pub handshake_timeout: Duration,
}

impl fmt::Debug for OnDemandConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnDemandConfig")
            .field("decide", &self.decide.is_some())
            .field("ask_url", &self.ask_url)
            .field("rate_limit", &self.rate_limit)
            .field("rate_interval", &self.rate_interval)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for OnDemandConfig {
    fn default() -> Self {
        OnDemandConfig {
            decide: None,
            ask_url: None,
            ask_timeout: Duration::from_secs(5),
            rate_limit: 10,
            rate_interval: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(60),
        }
    }
}

impl OnDemandConfig {
    /// Allowing names for which `decide` resolves to true.
    pub fn with_decision<F, Fut>(mut self, decide: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        self.decide = Some(Arc::new(move |name| Box::pin(decide(name))));
        self
    }

    /// Allowing names for which `GET url?domain=<name>` answers 2xx.
    pub fn with_ask_url(mut self, url: impl Into<String>) -> Self {
        self.ask_url = Some(url.into());
        self
    }

    /// At most `limit` new certificates per `interval`.
    pub fn with_rate_limit(mut self, limit: u32, interval: Duration) -> Self {
        self.rate_limit = limit;
        self.rate_interval = interval;
        self
    }

    /// Handshakes wait at most this long.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

struct OnDemandState {
    config: OnDemandConfig,
    /// Start of the current rate window and the certificates started in it.
    window: Mutex<(Instant, u32)>,
}

impl OnDemandState {
    async fn allowed(&self, name: &str) -> bool {
        if self.config.decide.is_none() && self.config.ask_url.is_none() {
            return false;
        }
        if let Some(decide) = &self.config.decide
            && !decide(name.to_owned()).await
        {
            return false;
        }
        if let Some(url) = &self.config.ask_url {
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{sep}domain={name}");
            match crate::challenge::http_request("GET", &url, None, self.config.ask_timeout).await {
                Ok(response) if (200..300).contains(&response.status) => {}
                Ok(_) => return false,
                Err(err) => {
                    tracing::warn!(name, error = %err, "the on-demand ask URL failed");
                    return false;
                }
            }
        }
        true
    }

    fn take_rate_slot(&self) -> bool {
        let mut window = self.window.lock();
        if window.0.elapsed() >= self.config.rate_interval {
            *window = (Instant::now(), 0);
        }
        if window.1 >= self.config.rate_limit {
            return false;
        }
        window.1 += 1;
        true
    }
}

#[derive(Debug, Clone)]
struct NameState {
    meta: CertificateMeta,
    chain_pem: Arc<str>,
    /// This node's renewal moment: the window's start moved earlier by a random jitter,
    /// so the nodes of a cluster do not all try at once.
    renew_at: SystemTime,
    failures: u32,
    next_attempt: Option<Instant>,
}

/// A certificate read from storage, with its servable form built once while checking it.
struct Loaded {
    stored: StoredCertificate,
    certified: Arc<CertifiedKey>,
}

struct Inner {
    storage: Arc<dyn Store>,
    cache: Arc<Cache>,
    issuers: Vec<Arc<dyn Issuer>>,
    config: ManagerConfig,
    events: broadcast::Sender<Event>,
    names: Mutex<HashMap<String, Option<NameState>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    on_demand: Mutex<Option<Arc<OnDemandState>>>,
}

/// Obtains, stores, loads and renews certificates; cheap to clone (clones share state).
#[derive(Clone)]
pub struct CertManager {
    inner: Arc<Inner>,
}

impl fmt::Debug for CertManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertManager")
            .field("storage", &self.inner.storage)
            .field("issuers", &self.issuer_ids())
            .field("names", &self.inner.names.lock().len())
            .finish()
    }
}

impl CertManager {
    /// A manager over `storage`, serving from `cache`, obtaining from `issuers` in order.
    pub fn new(
        storage: Arc<dyn Store>,
        cache: Arc<Cache>,
        issuers: Vec<Arc<dyn Issuer>>,
        config: ManagerConfig,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        CertManager {
            inner: Arc::new(Inner {
                storage,
                cache,
                issuers,
                config,
                events,
                names: Mutex::new(HashMap::new()),
                task: Mutex::new(None),
                on_demand: Mutex::new(None),
            }),
        }
    }

    /// The cache the handshake reads.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.inner.cache
    }

    /// The storage shared with the cluster.
    pub fn storage(&self) -> &Arc<dyn Store> {
        &self.inner.storage
    }

    /// A rustls resolver serving this manager's certificates.
    pub fn resolver(&self) -> CertResolver {
        CertResolver::new(Arc::clone(&self.inner.cache))
    }

    /// Turns on-demand TLS on (or replaces its configuration).
    pub fn enable_on_demand(&self, config: OnDemandConfig) {
        *self.inner.on_demand.lock() = Some(Arc::new(OnDemandState {
            config,
            window: Mutex::new((Instant::now(), 0)),
        }));
    }

    /// The preparation step of [`accept_lazy`](crate::accept_lazy) for on-demand TLS: when
    /// `server_name` has no certificate in the cache and on-demand policy allows it, the
    /// certificate is loaded or obtained (once per name however many handshakes wait, and
    /// under the cluster lock), waiting at most the handshake timeout. Other names'
    /// handshakes are not affected.
    pub async fn prepare_handshake(&self, server_name: Option<String>) {
        let Some(name) = server_name.and_then(|n| normalize_name(&n).ok()) else {
            return;
        };
        if self.inner.cache.get(&name).is_some() {
            return;
        }
        let Some(on_demand) = self.inner.on_demand.lock().clone() else {
            return;
        };
        if !on_demand.allowed(&name).await {
            tracing::debug!(name, "on-demand certificate denied");
            return;
        }
        let work = self.inner.cache.get_or_try_insert_with(&name, || async {
            if !on_demand.take_rate_slot() {
                return Err(ManageError::Issue {
                    name: name.clone(),
                    last: IssueError::temporary(std::io::Error::other(
                        "on-demand rate limit reached",
                    )),
                });
            }
            self.manage_one(&name).await?;
            self.inner
                .cache
                .get_exact(&name)
                .ok_or_else(|| ManageError::InvalidName(name.clone()))
        });
        match tokio::time::timeout(on_demand.config.handshake_timeout, work).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(name, error = %err, "on-demand certificate failed"),
            Err(_) => tracing::warn!(name, "on-demand certificate took too long"),
        }
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The identities of the issuers, in order.
    pub fn issuer_ids(&self) -> Vec<String> {
        self.inner.issuers.iter().map(|i| i.id()).collect()
    }

    /// The names under management.
    pub fn managed_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.names.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// The metadata of the certificate served for `name`, if any.
    pub fn certificate_meta(&self, name: &str) -> Option<CertificateMeta> {
        let name = normalize_name(name).ok()?;
        self.inner
            .names
            .lock()
            .get(&name)
            .and_then(|state| state.as_ref().map(|s| s.meta.clone()))
    }

    fn emit(&self, event: Event) {
        let _ = self.inner.events.send(event);
    }

    /// Puts `names` under management: each is loaded from storage or obtained, then kept
    /// renewed by the task [`start`](CertManager::start) runs. Every name is attempted and
    /// the failures are returned together.
    ///
    /// Names are worked on [`concurrency`](ManagerConfig::concurrency) at a time, each as
    /// a task of the Tokio runtime, so the storage round trips overlap and the CPU work of
    /// a start with many certificates (parsing chains and keys) spreads over the runtime's
    /// worker threads. Dropping the returned future aborts the work still in progress.
    pub async fn manage<I, S>(&self, names: I) -> Result<(), Vec<(String, ManageError)>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut pending = names.into_iter().map(|n| n.as_ref().to_owned());
        let limit = self.inner.config.concurrency.max(1);
        // A JoinSet aborts its tasks when dropped, so cancelling `manage` cancels them.
        let mut running = tokio::task::JoinSet::new();
        let mut failures = Vec::new();
        loop {
            while running.len() < limit {
                let Some(name) = pending.next() else { break };
                let manager = self.clone();
                running.spawn(async move {
                    let result = manager.manage_one(&name).await;
                    (name, result)
                });
            }
            match running.join_next().await {
                Some(Ok((_, Ok(())))) => {}
                Some(Ok((name, Err(err)))) => failures.push((name, err)),
                // A panic in a task is a bug: carry it on to the caller, as if the work
                // had run inline. Tasks are never aborted while the set is alive.
                Some(Err(err)) => match err.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(err) => tracing::warn!(error = %err, "a manage task was cancelled"),
                },
                None => break,
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    async fn manage_one(&self, name: &str) -> Result<(), ManageError> {
        let name = normalize_name(name)?;
        self.inner.names.lock().entry(name.clone()).or_insert(None);
        if let Some(Loaded { stored, certified }) = self.load_stored(&name).await? {
            let due = self.due(&stored).await;
            self.install(&name, &stored, certified);
            self.apply_window(&name, &stored).await;
            self.emit(Event::Loaded { name: name.clone() });
            if !due {
                return Ok(());
            }
        }
        match self.obtain(&name).await {
            Ok(()) => Ok(()),
            Err(err) => {
                self.record_failure(&name, None, &err);
                // An older certificate, if loaded above, is still served.
                if self.inner.cache.get_exact(&name).is_some() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    fn is_due(&self, meta: &CertificateMeta) -> bool {
        SystemTime::now() >= meta.renew_at(self.inner.config.renew_ratio)
    }

    /// The renewal window the certificate's issuer suggests (ACME renewal information).
    async fn issuer_window(
        &self,
        meta: &CertificateMeta,
        chain_pem: &str,
    ) -> Option<(SystemTime, SystemTime)> {
        let issuer = self.inner.issuers.iter().find(|i| i.id() == meta.issuer)?;
        issuer.renewal_window(meta, chain_pem).await
    }

    /// Whether a stored certificate is due: inside its issuer's suggested window when the
    /// issuer offers one, else past the lifetime ratio.
    async fn due(&self, stored: &StoredCertificate) -> bool {
        match self.issuer_window(&stored.meta, &stored.chain_pem).await {
            Some((start, _)) => SystemTime::now() >= start,
            None => self.is_due(&stored.meta),
        }
    }

    /// Moves this node's renewal moment to a random point of the issuer's suggested
    /// window, when it offers one.
    async fn apply_window(&self, name: &str, stored: &StoredCertificate) {
        let Some((start, end)) = self.issuer_window(&stored.meta, &stored.chain_pem).await else {
            return;
        };
        let span = end.duration_since(start).unwrap_or_default();
        let at = start + span.mul_f64(fastrand::f64());
        if let Some(Some(state)) = self.inner.names.lock().get_mut(name)
            && state.meta.serial == stored.meta.serial
        {
            state.renew_at = at;
        }
    }

    /// The renewal moment of `name` on this node (after any issuer-suggested window).
    pub fn renewal_moment(&self, name: &str) -> Option<SystemTime> {
        let name = normalize_name(name).ok()?;
        self.inner
            .names
            .lock()
            .get(&name)
            .and_then(|state| state.as_ref().map(|s| s.renew_at))
    }

    /// Loads the newest usable certificate for `name` from any issuer's area of storage.
    async fn load_stored(&self, name: &str) -> Result<Option<Loaded>, Error> {
        let mut best: Option<Loaded> = None;
        for issuer in &self.inner.issuers {
            let Some(loaded) = self.load_from(&issuer.id(), name).await? else {
                continue;
            };
            if best
                .as_ref()
                .is_none_or(|b| loaded.stored.meta.not_after > b.stored.meta.not_after)
            {
                best = Some(loaded);
            }
        }
        Ok(best)
    }

    async fn load_from(&self, issuer: &str, name: &str) -> Result<Option<Loaded>, Error> {
        let storage = &self.inner.storage;
        let meta_key = keys::certificate_meta(issuer, name);
        // A writer replaces key, chain and metadata one after the other; a reader that
        // lands in between sees a mismatch, waits a moment and reads again.
        for attempt in 0..5 {
            let Some(meta_bytes) = storage.load_opt(&meta_key).await? else {
                return Ok(None);
            };
            let meta: CertificateMeta = serde_json::from_slice(&meta_bytes)
                .map_err(|err| Error::corrupt(&meta_key, err))?;
            let chain = storage
                .load_opt(&keys::certificate_chain(issuer, name))
                .await?;
            let key = storage
                .load_opt(&keys::certificate_key(issuer, name))
                .await?;
            if let (Some(chain), Some(key)) = (chain, key) {
                let key = Zeroizing::new(key);
                let chain_pem = String::from_utf8_lossy(&chain).into_owned();
                let key_pem = Zeroizing::new(String::from_utf8_lossy(&key).into_owned());
                let stored = StoredCertificate {
                    chain_pem,
                    key_pem,
                    meta,
                };
                // The servable form is built once, here, and checked against the
                // metadata: parsing the chain and the key is most of a load's CPU time.
                let certified = stored.certified_key().ok().filter(|certified| {
                    certified
                        .cert
                        .first()
                        .and_then(|leaf| crate::certificate::leaf_info(leaf).ok())
                        .is_some_and(|leaf| leaf.serial == stored.meta.serial)
                });
                if let Some(certified) = certified {
                    return Ok(Some(Loaded { stored, certified }));
                }
            }
            tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
        }
        Err(Error::corrupt(
            meta_key,
            std::io::Error::other("certificate, key and metadata do not belong together"),
        ))
    }

    /// The servable form of a certificate just issued.
    fn certify(name: &str, stored: &StoredCertificate) -> Result<Arc<CertifiedKey>, Error> {
        stored
            .certified_key()
            .map_err(|err| Error::corrupt(keys::certificate_chain(&stored.meta.issuer, name), err))
    }

    fn install(&self, name: &str, stored: &StoredCertificate, certified: Arc<CertifiedKey>) {
        self.inner.cache.insert(name, certified);
        let lifetime = stored.meta.lifetime();
        let jitter = lifetime.mul_f64(0.02 * fastrand::f64());
        let renew_at = stored.meta.renew_at(self.inner.config.renew_ratio) - jitter;
        self.inner.names.lock().insert(
            name.to_owned(),
            Some(NameState {
                meta: stored.meta.clone(),
                chain_pem: Arc::from(stored.chain_pem.as_str()),
                renew_at,
                failures: 0,
                next_attempt: None,
            }),
        );
    }

    /// Obtains (or renews) a certificate for `name` under its cluster lock.
    #[tracing::instrument(level = "debug", skip(self))]
    async fn obtain(&self, name: &str) -> Result<(), ManageError> {
        if self.inner.issuers.is_empty() {
            return Err(ManageError::NoIssuer);
        }
        let locker: Arc<dyn Locker> = self.inner.storage.clone();
        let guard = lock(locker, &keys::issue_lock(name), &self.inner.config.lock).await?;
        let result = self.obtain_locked(name).await;
        if let Err(err) = guard.release().await {
            tracing::warn!(name, error = %err, "releasing the issuance lock failed");
        }
        result
    }

    async fn obtain_locked(&self, name: &str) -> Result<(), ManageError> {
        // Another node may have obtained or renewed it while this one waited.
        let served = self.certificate_meta(name);
        if let Some(Loaded { stored, certified }) = self.load_stored(name).await?
            && !self.due(&stored).await
        {
            let newer = served
                .as_ref()
                .is_none_or(|s| s.serial != stored.meta.serial);
            self.install(name, &stored, certified);
            self.apply_window(name, &stored).await;
            if newer {
                self.emit(Event::Loaded {
                    name: name.to_owned(),
                });
            }
            return Ok(());
        }
        let renewing = served.is_some();
        let mut last = None;
        for issuer in &self.inner.issuers {
            let issuer_id = issuer.id();
            self.emit(Event::Obtaining {
                name: name.to_owned(),
                issuer: issuer_id.clone(),
            });
            match self.issue_with(issuer.as_ref(), name).await {
                Ok(stored) => {
                    self.save(name, &stored).await?;
                    self.install(name, &stored, Self::certify(name, &stored)?);
                    self.apply_window(name, &stored).await;
                    let event = if renewing {
                        Event::Renewed {
                            name: name.to_owned(),
                            issuer: issuer_id,
                        }
                    } else {
                        Event::Obtained {
                            name: name.to_owned(),
                            issuer: issuer_id,
                        }
                    };
                    self.emit(event);
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(name, issuer = %issuer_id, error = %err, "issuer failed");
                    self.emit(Event::Failed {
                        name: name.to_owned(),
                        issuer: Some(issuer_id),
                        error: err.to_string(),
                        retry_in: None,
                    });
                    last = Some(err);
                }
            }
        }
        Err(ManageError::Issue {
            name: name.to_owned(),
            last: last.unwrap_or(IssueError::Rejected {
                reason: "no issuer".into(),
            }),
        })
    }

    #[tracing::instrument(level = "debug", skip(self, issuer), fields(issuer = %issuer.id()))]
    async fn issue_with(
        &self,
        issuer: &dyn Issuer,
        name: &str,
    ) -> Result<StoredCertificate, IssueError> {
        let key_type = self.inner.config.key_type;
        let key = key_type.generate().map_err(|err| IssueError::Rejected {
            reason: err.to_string(),
        })?;
        let names = vec![name.to_owned()];
        let params =
            rcgen::CertificateParams::new(names.clone()).map_err(|err| IssueError::Rejected {
                reason: format!("invalid name {name:?}: {err}"),
            })?;
        let csr = params
            .serialize_request(&key)
            .map_err(|err| IssueError::Rejected {
                reason: err.to_string(),
            })?;
        let public_key_pem = key.public_key_pem();
        let issued = issuer
            .issue(IssueRequest {
                names: &names,
                public_key_pem: &public_key_pem,
                csr_der: csr.der(),
            })
            .await?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        StoredCertificate::from_pem(&issued.chain_pem, &key_pem, &issuer.id(), Some(key_type))
            .map_err(|err| IssueError::Rejected {
                reason: format!("the issuer returned an unusable certificate: {err}"),
            })
    }

    #[tracing::instrument(level = "debug", skip(self, stored))]
    async fn save(&self, name: &str, stored: &StoredCertificate) -> Result<(), Error> {
        let storage = &self.inner.storage;
        let issuer = &stored.meta.issuer;
        storage
            .store(
                &keys::certificate_key(issuer, name),
                stored.key_pem.as_bytes(),
            )
            .await?;
        storage
            .store(
                &keys::certificate_chain(issuer, name),
                stored.chain_pem.as_bytes(),
            )
            .await?;
        storage
            .store_json(&keys::certificate_meta(issuer, name), &stored.meta)
            .await
    }

    fn record_failure(&self, name: &str, issuer: Option<String>, err: &ManageError) {
        let retry = self.inner.config.retry;
        let mut names = self.inner.names.lock();
        let retry_in = match names.get_mut(name) {
            Some(Some(state)) => {
                state.failures += 1;
                let delay = retry.delay(state.failures);
                state.next_attempt = Some(Instant::now() + delay);
                Some(delay)
            }
            _ => None,
        };
        drop(names);
        self.emit(Event::Failed {
            name: name.to_owned(),
            issuer,
            error: err.to_string(),
            retry_in,
        });
    }

    /// Stops managing `names` on this node: they leave the cache (handshakes for them no
    /// longer find a certificate) and the renewal task. Storage is untouched, so other
    /// nodes keep serving them. Emits [`Event::Evicted`] for each name that was managed.
    pub fn unmanage<I, S>(&self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for name in names {
            let Ok(name) = normalize_name(name.as_ref()) else {
                continue;
            };
            let was_managed = self.inner.names.lock().remove(&name).is_some();
            self.inner.cache.remove(&name);
            if was_managed {
                self.emit(Event::Evicted { name });
            }
        }
    }

    /// Adds a certificate obtained elsewhere (PEM chain and key) to the cache under every
    /// name it covers; it is served but neither stored nor renewed. Returns the names.
    pub fn add_certificate(
        &self,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Vec<String>, crate::certificate::CertificateError> {
        let stored = StoredCertificate::from_pem(chain_pem, key_pem, "unmanaged", None)?;
        let certified = stored.certified_key()?;
        for name in &stored.meta.names {
            self.inner.cache.insert(name, Arc::clone(&certified));
        }
        Ok(stored.meta.names)
    }

    /// One renewal pass now: renews every managed certificate inside its window whose
    /// backoff has passed, and retries names that have no certificate yet.
    pub async fn renew_due(&self) {
        let known: Vec<(String, CertificateMeta, Arc<str>)> = self
            .inner
            .names
            .lock()
            .iter()
            .filter_map(|(name, state)| {
                state
                    .as_ref()
                    .map(|s| (name.clone(), s.meta.clone(), Arc::clone(&s.chain_pem)))
            })
            .collect();
        for (name, meta, chain_pem) in known {
            if let Some((start, end)) = self.issuer_window(&meta, &chain_pem).await
                && let Some(Some(state)) = self.inner.names.lock().get_mut(&name)
                && state.meta.serial == meta.serial
                && !(start..=end).contains(&state.renew_at)
            {
                let span = end.duration_since(start).unwrap_or_default();
                state.renew_at = start + span.mul_f64(fastrand::f64());
            }
        }
        let now_wall = SystemTime::now();
        let now = Instant::now();
        let due: Vec<String> = self
            .inner
            .names
            .lock()
            .iter()
            .filter(|(_, state)| match state {
                None => true,
                Some(state) => {
                    now_wall >= state.renew_at && state.next_attempt.is_none_or(|t| now >= t)
                }
            })
            .map(|(name, _)| name.clone())
            .collect();
        futures::stream::iter(due)
            .for_each_concurrent(self.inner.config.concurrency.max(1), |name| async move {
                if let Err(err) = self.obtain(&name).await {
                    self.record_failure(&name, None, &err);
                }
            })
            .await;
    }

    /// Starts the background renewal task (once; later calls do nothing). It runs every
    /// `check_interval` until [`stop`](CertManager::stop) or the last clone is dropped.
    pub fn start(&self) {
        let mut task = self.inner.task.lock();
        if task.is_some() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.check_interval;
        *task = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                let manager = CertManager { inner };
                manager.renew_due().await;
                if let Err(err) = manager.clean_if_due().await {
                    tracing::warn!(error = %err, "storage cleaning failed");
                }
            }
        }));
    }

    /// Stops the background renewal task.
    pub fn stop(&self) {
        if let Some(task) = self.inner.task.lock().take() {
            task.abort();
        }
    }

    /// Removes certificates expired for longer than the grace period from storage, under a
    /// cluster-wide lock, at most once per `clean_interval` across the cluster. Returns the
    /// prefixes removed (empty when another node cleaned recently or is cleaning now).
    pub async fn clean_if_due(&self) -> Result<Vec<String>, Error> {
        let locker: Arc<dyn Locker> = self.inner.storage.clone();
        let Some(guard) = try_lock(locker, keys::CLEAN_LOCK, &LockOptions::default()).await? else {
            return Ok(Vec::new());
        };
        let result = self.clean_locked().await;
        let _ = guard.release().await;
        result
    }

    async fn clean_locked(&self) -> Result<Vec<String>, Error> {
        const MARK: &str = "maintenance/last-clean.json";
        let storage = &self.inner.storage;
        let now = SystemTime::now();
        if let Some(last) = storage.load_opt(MARK).await? {
            let last: i64 = serde_json::from_slice(&last).unwrap_or(0);
            let next = unix_to_system(last) + self.inner.config.clean_interval;
            if now < next {
                return Ok(Vec::new());
            }
        }
        let mut removed = Vec::new();
        let cutoff = system_to_unix(now - self.inner.config.clean_grace);
        for key in storage.list(keys::CERTIFICATES, true).await? {
            if !key.ends_with(".json") {
                continue;
            }
            let Some(bytes) = storage.load_opt(&key).await? else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<CertificateMeta>(&bytes) else {
                continue;
            };
            if meta.not_after < cutoff
                && let Some((prefix, _)) = key.rsplit_once('/')
            {
                match storage.delete(prefix).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(err) => return Err(err),
                }
                self.emit(Event::Cleaned {
                    prefix: prefix.to_owned(),
                });
                removed.push(prefix.to_owned());
            }
        }
        match storage.clean_expired_locks().await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "removed expired locks"),
            Err(err) => tracing::warn!(error = %err, "removing expired locks failed"),
        }
        storage.store_json(MARK, &system_to_unix(now)).await?;
        Ok(removed)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

/// Lower case, no trailing dot, IDNs in ASCII form; refuses what cannot be a server name.
fn normalize_name(name: &str) -> Result<String, ManageError> {
    let trimmed = name.trim().trim_end_matches('.');
    let (wild, rest) = match trimmed.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let ascii = idna::domain_to_ascii(rest).map_err(|_| ManageError::InvalidName(name.into()))?;
    let valid = !ascii.is_empty()
        && ascii.len() <= 253
        && ascii
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
        && ascii
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':');
    if !valid {
        return Err(ManageError::InvalidName(name.into()));
    }
    Ok(if wild { format!("*.{ascii}") } else { ascii })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_doubles_up_to_the_cap() {
        let retry = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = (1..=6).map(|n| retry.delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(retry.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn names_are_normalized_or_refused() {
        assert_eq!(normalize_name("Example.COM.").unwrap(), "example.com");
        assert_eq!(normalize_name("*.Example.com").unwrap(), "*.example.com");
        assert_eq!(
            normalize_name("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize_name("127.0.0.1").unwrap(), "127.0.0.1");
        for bad in ["", "a..b", "a/b", "a b", "*", "x.*.example"] {
            assert!(normalize_name(bad).is_err(), "{bad:?}");
        }
    }
}
