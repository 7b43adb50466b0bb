//! On-demand TLS: certificates obtained during the first handshake for an allowed name.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::{CertManager, Event, ManageError, OnDemandConfig, normalize_name};
use crate::challenge::HttpClient;
use crate::issuer::IssueError;

/// One name's decision in flight, awaited by every handshake for that name.
type Decision = Shared<BoxFuture<'static, bool>>;

/// What the policy said about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    /// The decision function or the ask URL said no: remembered for `deny_ttl`.
    Deny,
    /// The policy could not answer (the ask URL failed, the decision took too long): the
    /// name is refused this time only, so an outage does not lock a name out.
    Unavailable,
}

/// How a handshake gets its name's decision.
enum Start {
    /// A denial is remembered.
    Denied,
    /// Too many decisions for other names are running.
    Busy,
    /// The decision in flight (shared, or just started).
    Decide(Decision),
}

/// Names recently denied, until when, bounded: a flood of names cannot grow it without
/// limit. Every entry lives `deny_ttl`, so insertion order is also expiry order and the
/// front of `order` is both the oldest and the first to expire.
struct DenyCache {
    until: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
    capacity: usize,
}

impl DenyCache {
    fn new(capacity: usize) -> Self {
        DenyCache {
            until: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn contains(&mut self, name: &str, now: Instant) -> bool {
        match self.until.get(name) {
            Some(until) if now < *until => true,
            Some(_) => {
                // Its queue entry goes with the next insertion's sweep.
                self.until.remove(name);
                false
            }
            None => false,
        }
    }

    fn insert(&mut self, name: &str, until: Instant, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        while self.order.front().is_some_and(|(_, t)| *t <= now) {
            self.pop_front();
        }
        while self.until.len() >= self.capacity && !self.order.is_empty() {
            self.pop_front();
        }
        self.until.insert(name.to_owned(), until);
        self.order.push_back((name.to_owned(), until));
    }

    /// Forgets the oldest queue entry, and its name unless the name was denied again since.
    fn pop_front(&mut self) {
        if let Some((name, at)) = self.order.pop_front()
            && self.until.get(&name) == Some(&at)
        {
            self.until.remove(&name);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.until.len()
    }
}

pub(super) struct OnDemandState {
    pub(super) config: OnDemandConfig,
    /// Start of the current rate window and the certificates started in it.
    window: Mutex<(Instant, u32)>,
    /// Names dropped after repeated failures, and until when they are not tried again
    /// (bounded like the denials: pauses differ, so an entry may outlive its place in the
    /// queue's order, but never the capacity).
    dropped: Mutex<DenyCache>,
    /// Decisions in flight, one per name.
    deciding: Mutex<HashMap<String, Decision>>,
    /// Names denied recently.
    denied: Mutex<DenyCache>,
    /// One permit per decision in flight.
    asks: Arc<Semaphore>,
    /// The client for the ask URL, when there is one.
    client: Option<HttpClient>,
}

impl OnDemandState {
    fn new(config: OnDemandConfig) -> Self {
        let client = config.ask_url.as_ref().and_then(|_| {
            let built = HttpClient::new(config.ask_root_pem.as_deref()).or_else(|err| {
                // Without the extra roots an https:// server they were meant for fails
                // verification, so its names are denied: failing closed.
                tracing::error!(error = %err, "the on-demand ask roots are unusable; ignored");
                HttpClient::new(None)
            });
            match built {
                Ok(client) => Some(client),
                Err(err) => {
                    tracing::error!(error = %err, "no HTTP client for the on-demand ask URL");
                    None
                }
            }
        });
        OnDemandState {
            window: Mutex::new((Instant::now(), 0)),
            dropped: Mutex::new(DenyCache::new(config.deny_cache_size)),
            deciding: Mutex::new(HashMap::new()),
            denied: Mutex::new(DenyCache::new(config.deny_cache_size)),
            asks: Arc::new(Semaphore::new(config.max_concurrent_asks.max(1))),
            client,
            config,
        }
    }

    fn has_policy(&self) -> bool {
        self.config.decide.is_some() || self.config.ask_url.is_some()
    }

    /// The decision for `name`: the one in flight, or a new one in a task of its own
    /// when a permit is free. The task runs to its end even when every handshake waiting
    /// for it goes away, so its permit is always given back.
    fn start_decision(self: &Arc<Self>, name: &str) -> Start {
        let mut deciding = self.deciding.lock();
        if let Some(decision) = deciding.get(name) {
            return Start::Decide(decision.clone());
        }
        // Checked under the `deciding` lock: a decision records its denial before it
        // leaves `deciding`, so a denial just made is seen here and not asked again.
        if self.denied.lock().contains(name, Instant::now()) {
            return Start::Denied;
        }
        let Ok(permit) = Arc::clone(&self.asks).try_acquire_owned() else {
            return Start::Busy;
        };
        let state = Arc::clone(self);
        let owned = name.to_owned();
        let task = tokio::spawn(async move {
            let verdict = state.decide(&owned).await;
            drop(permit);
            if verdict == Verdict::Deny && !state.config.deny_ttl.is_zero() {
                let now = Instant::now();
                state
                    .denied
                    .lock()
                    .insert(&owned, now + state.config.deny_ttl, now);
            }
            state.deciding.lock().remove(&owned);
            verdict == Verdict::Allow
        });
        let decision = async move { task.await.unwrap_or(false) }.boxed().shared();
        deciding.insert(name.to_owned(), decision.clone());
        Start::Decide(decision)
    }

    async fn decide(&self, name: &str) -> Verdict {
        if let Some(decide) = &self.config.decide {
            // Bounded so a decision that hangs cannot hold its permit for ever; no
            // handshake waits longer than this anyway.
            match tokio::time::timeout(self.config.handshake_timeout, decide(name.to_owned())).await
            {
                Ok(true) => {}
                Ok(false) => return Verdict::Deny,
                Err(_) => {
                    tracing::warn!(name, "the on-demand decision function took too long");
                    return Verdict::Unavailable;
                }
            }
        }
        if let Some(url) = &self.config.ask_url {
            let Some(client) = &self.client else {
                return Verdict::Unavailable;
            };
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{sep}domain={name}");
            match client
                .request("GET", &url, None, self.config.ask_timeout)
                .await
            {
                Ok(response) if (200..300).contains(&response.status) => {}
                // A server error is the ask service failing, not its answer.
                Ok(response) if response.status >= 500 => {
                    tracing::warn!(
                        name,
                        status = response.status,
                        "the on-demand ask URL failed"
                    );
                    return Verdict::Unavailable;
                }
                Ok(_) => return Verdict::Deny,
                Err(err) => {
                    tracing::warn!(name, error = %err, "the on-demand ask URL failed");
                    return Verdict::Unavailable;
                }
            }
        }
        Verdict::Allow
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

    /// Whether `name` was dropped and its pause has not ended.
    fn is_dropped(&self, name: &str) -> bool {
        self.dropped.lock().contains(name, Instant::now())
    }
}

impl CertManager {
    /// Turns on-demand TLS on (or replaces its configuration).
    pub fn enable_on_demand(&self, config: OnDemandConfig) {
        *self.inner.on_demand.lock() = Some(Arc::new(OnDemandState::new(config)));
    }

    /// The preparation step of [`accept_lazy`](crate::accept_lazy) for on-demand TLS: when
    /// `server_name` has no certificate in the cache and on-demand policy allows it, the
    /// certificate is loaded or obtained (once per name however many handshakes wait, and
    /// under the cluster lock), waiting at most the handshake timeout. Other names'
    /// handshakes are not affected.
    ///
    /// Names that can never be stored are refused first, before the decision function or
    /// the ask URL; a name that failed [`max_failures`](OnDemandConfig::max_failures) times
    /// is not tried again until its backoff has passed. Concurrent handshakes for one name
    /// share one decision; a denied name is refused without asking for
    /// [`deny_ttl`](OnDemandConfig::deny_ttl); and when
    /// [`max_concurrent_asks`](OnDemandConfig::max_concurrent_asks) decisions for other
    /// names are running, the handshake is refused at once.
    ///
    /// Refusals (denied, too busy, failed, too slow) are logged like the resolver's (see
    /// [`CertResolver`](crate::CertResolver)): once per name in a window, within a
    /// budget of lines, sharing that budget with the manager's resolvers.
    pub async fn prepare_handshake(&self, server_name: Option<String>) {
        let Some(name) = server_name.and_then(|n| normalize_name(&n).ok()) else {
            return;
        };
        let Some(on_demand) = self.inner.on_demand.lock().clone() else {
            return;
        };
        let now = Instant::now();
        let backing_off = match self.inner.names.lock().get_mut(&name) {
            Some(state) => {
                state.last_requested = now;
                state.served.is_none() && state.next_attempt.is_some_and(|t| now < t)
            }
            None => false,
        };
        if backing_off || self.inner.cache.get(&name).is_some() || on_demand.is_dropped(&name) {
            return;
        }
        if !on_demand.has_policy() {
            return;
        }
        let refusals = &self.inner.refusals;
        let decision = match on_demand.start_decision(&name) {
            Start::Decide(decision) => decision,
            Start::Denied => {
                crate::metrics::on_demand("denied");
                refusals.refused(
                    Some(name.as_str()),
                    &"the on-demand policy denied it recently",
                );
                return;
            }
            Start::Busy => {
                crate::metrics::on_demand("busy");
                refusals.refused(
                    Some(name.as_str()),
                    &"too many on-demand decisions in flight",
                );
                return;
            }
        };
        if !decision.await {
            crate::metrics::on_demand("denied");
            refusals.refused(Some(name.as_str()), &"the on-demand policy denied it");
            return;
        }
        let work = self.inner.cache.get_or_try_insert_with(&name, || async {
            if !on_demand.take_rate_slot() {
                crate::metrics::on_demand("rate_limited");
                return Err(ManageError::Issue {
                    name: name.clone(),
                    last: IssueError::temporary(std::io::Error::other(
                        "on-demand rate limit reached",
                    )),
                });
            }
            crate::metrics::on_demand("allowed");
            self.manage_one(&name, true).await?;
            self.inner
                .cache
                .get_exact(&name)
                .ok_or_else(|| ManageError::InvalidName(name.clone()))
        });
        match tokio::time::timeout(on_demand.config.handshake_timeout, work).await {
            Ok(Ok(_)) => self.update_gauges(),
            Ok(Err(err)) => refusals.failed(&name, &err),
            Err(_) => refusals.failed(&name, &"it took longer than the handshake timeout"),
        }
    }

    /// Stops working on an on-demand name that failed too often, until `pause` has passed
    /// and a handshake asks for it again.
    pub(super) fn drop_on_demand(&self, name: &str, pause: Duration) {
        let Some(on_demand) = self.inner.on_demand.lock().clone() else {
            return;
        };
        let now = Instant::now();
        on_demand.dropped.lock().insert(name, now + pause, now);
        let removed = self.inner.names.lock().remove(name).is_some();
        if removed {
            self.update_gauges();
            tracing::warn!(name, "on-demand name dropped after repeated failures");
            self.emit(Event::Evicted {
                name: name.to_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_cache_expires_and_stays_bounded() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut cache = DenyCache::new(3);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let at = now + Duration::from_millis(i as u64);
            cache.insert(name, at + ttl, at);
        }
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains("a", now), "the oldest was evicted");
        assert!(cache.contains("d", now));
        // Expired entries are dropped by the next insertion's sweep.
        let later = now + ttl + Duration::from_secs(1);
        assert!(!cache.contains("b", later));
        cache.insert("e", later + ttl, later);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.order.len(), 1);
        // A name denied again after expiry keeps its new deadline.
        cache.insert("b", later + ttl, later);
        assert!(cache.contains("b", later));
        let mut none = DenyCache::new(0);
        none.insert("x", later + ttl, later);
        assert!(!none.contains("x", later));
    }
}
