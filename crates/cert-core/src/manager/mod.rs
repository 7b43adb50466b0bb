//! [`CertManager`]: obtains, stores, loads and renews certificates for a set of names,
//! coordinated across every node that shares the storage.
//!
//! For each managed name the manager serves from its [`Cache`]; it loads the certificate
//! from storage, or obtains one while holding the name's cluster lock, re-checking storage
//! once the lock is won (another node may have done the work meanwhile). A background task
//! renews inside the renewal window, with backoff on failure and fallback to the next
//! issuer; the old certificate keeps being served until a replacement exists.
//!
//! Faults, by design:
//! - Certificates are [records](crate::record) with one commit point, so a crash at any
//!   moment leaves the old certificate or the new one. A record that is unusable anyway
//!   (hand edits, a value that fails to decrypt) never stops the manager: it emits
//!   [`Event::Broken`], keeps serving what it has in memory and issues the name again.
//! - Work under a name's lock watches the lease: the issuer call is abandoned as soon as
//!   the lease is lost, and every write is fenced by it ([`Storage::store_fenced`]), so a
//!   node that stalled past its lease never overwrites the node that took over.
//! - Failures back off per name, and the backoff is kept in storage, so the whole fleet
//!   backs off together (see [`RetryPolicy`]).
//!
//! [`Storage::store_fenced`]: crate::Storage::store_fenced

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::certificate::CertificateMeta;
use crate::issuer::Issuer;
use crate::refusals::RefusalLog;
use crate::resolver::CertResolver;
use crate::{Cache, Store, keys};

mod backoff;
mod clean;
mod config;
mod events;
mod obtain;
mod on_demand;
mod renew;

pub use config::{ManagerConfig, OnDemandConfig, OnDemandDecision, RetryPolicy};
pub use events::{Event, ManageError, ManageFailures};

use on_demand::OnDemandState;

/// The certificate a node serves for a name, as the renewal task needs it.
#[derive(Debug, Clone)]
struct Served {
    meta: CertificateMeta,
    chain_pem: Arc<str>,
    /// This node's renewal moment: the window's start moved earlier by a random jitter,
    /// so the nodes of a cluster do not all try at once.
    renew_at: SystemTime,
}

/// What this node knows of one managed name.
#[derive(Debug, Clone)]
struct NameState {
    /// The certificate served, once there is one.
    served: Option<Served>,
    /// Consecutive failed attempts (this node's, or the fleet's as read from storage).
    failures: u32,
    /// No attempt before this instant.
    next_attempt: Option<Instant>,
    /// Whether the name came from on-demand TLS (dropped after repeated failures,
    /// forgotten when no handshake asks for it).
    on_demand: bool,
    /// The last handshake that asked for an on-demand name.
    last_requested: Instant,
}

impl NameState {
    fn new(on_demand: bool) -> Self {
        NameState {
            served: None,
            failures: 0,
            next_attempt: None,
            on_demand,
            last_requested: Instant::now(),
        }
    }
}

struct Inner {
    storage: Arc<dyn Store>,
    cache: Arc<Cache>,
    issuers: Vec<Arc<dyn Issuer>>,
    config: ManagerConfig,
    events: broadcast::Sender<Event>,
    names: Mutex<HashMap<String, NameState>>,
    task: Mutex<Option<JoinHandle<()>>>,
    on_demand: Mutex<Option<Arc<OnDemandState>>>,
    /// Which refused handshakes are logged, shared by the resolvers and on-demand TLS.
    refusals: Arc<RefusalLog>,
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
                refusals: Arc::default(),
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

    /// A rustls resolver serving this manager's certificates. The handshakes it refuses
    /// are logged within one budget shared with on-demand TLS (see [`CertResolver`]).
    pub fn resolver(&self) -> CertResolver {
        CertResolver::new(Arc::clone(&self.inner.cache))
            .with_refusal_log(Arc::clone(&self.inner.refusals))
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
            .and_then(|state| state.served.as_ref().map(|s| s.meta.clone()))
    }

    /// The renewal moment of `name` on this node (after any issuer-suggested window).
    pub fn renewal_moment(&self, name: &str) -> Option<SystemTime> {
        let name = normalize_name(name).ok()?;
        self.inner
            .names
            .lock()
            .get(&name)
            .and_then(|state| state.served.as_ref().map(|s| s.renew_at))
    }

    fn emit(&self, event: Event) {
        let _ = self.inner.events.send(event);
    }

    /// Sets the gauges of managed names and of the earliest expiry (one pass over the
    /// names: called after `manage`, every renewal pass and `unmanage`, not per name).
    fn update_gauges(&self) {
        let names = self.inner.names.lock();
        crate::metrics::managed_names(names.len());
        let earliest = names
            .values()
            .filter_map(|state| state.served.as_ref())
            .map(|served| served.meta.not_after)
            .min();
        drop(names);
        crate::metrics::earliest_expiry(earliest.map(crate::certificate::unix_to_system));
    }

    /// Puts `names` under management: each is loaded from storage or obtained, then kept
    /// renewed by the task [`start`](CertManager::start) runs. Every name is attempted and
    /// the failures are returned together, as one [`ManageFailures`] error naming each
    /// failing name with its cause (so `manager.manage(names).await?` works in a function
    /// returning `Box<dyn Error>` or `anyhow::Result`); a name that fails stays managed
    /// (it is retried with backoff by the renewal task) and never keeps the others from
    /// being served.
    ///
    /// Names are worked on [`concurrency`](ManagerConfig::concurrency) at a time, each as
    /// a task of the Tokio runtime, so the storage round trips overlap and the CPU work of
    /// a start with many certificates (parsing chains and keys) spreads over the runtime's
    /// worker threads. Dropping the returned future aborts the work still in progress.
    pub async fn manage<I, S>(&self, names: I) -> Result<(), ManageFailures>
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
                    let result = manager.manage_one(&name, false).await;
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
        self.update_gauges();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ManageFailures::new(failures))
        }
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
        self.update_gauges();
    }

    /// Adds a certificate obtained elsewhere (PEM chain and key) to the cache under every
    /// name it covers; it is served but neither stored nor renewed. Returns the names.
    pub fn add_certificate(
        &self,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Vec<String>, crate::certificate::CertificateError> {
        let stored = crate::StoredCertificate::from_pem(chain_pem, key_pem, "unmanaged", None)?;
        let certified = stored.certified_key()?;
        for name in &stored.meta.names {
            self.inner.cache.insert(name, Arc::clone(&certified));
        }
        Ok(stored.meta.names)
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
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

/// Lower case, no trailing dot, IDNs in ASCII form; refuses what cannot be a server name,
/// and names whose storage keys would be too long to store (so they fail here, before any
/// lock, order or handshake work, instead of after the CA issued).
pub(crate) fn normalize_name(name: &str) -> Result<String, ManageError> {
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
    let normalized = if wild { format!("*.{ascii}") } else { ascii };
    // `<name>.bundle` is the longest segment a certificate record uses.
    let record_segment = keys::safe_name(&normalized).len() + ".bundle".len();
    if record_segment > crate::MAX_SEGMENT_LEN
        || crate::validate_key(&keys::backoff(&normalized)).is_err()
    {
        return Err(ManageError::InvalidName(name.into()));
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn names_too_long_to_store_are_refused() {
        // 4 labels of 50 characters: a valid DNS name of 203 bytes, longer than a key
        // segment may be.
        let label = "a".repeat(50);
        let long = [label.as_str(); 4].join(".");
        assert!(long.len() > 200 && long.len() <= 253);
        assert!(normalize_name(&long).is_err());
        let fits = [label.as_str(); 3].join(".");
        assert_eq!(normalize_name(&fits).unwrap(), fits);
    }
}
