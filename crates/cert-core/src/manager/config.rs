//! How a [`CertManager`](super::CertManager)(super::CertManager) works: policy, backoff and on-demand TLS.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::LockOptions;
use crate::certificate::KeyType;

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

/// How a [`CertManager`](super::CertManager) works.
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
    /// How many names [`CertManager::manage`](super::CertManager::manage) works on at once. Default 16.
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
/// managed ([`CertManager::prepare_handshake`](super::CertManager::prepare_handshake)). A name is allowed only when the decision
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
    /// After this many consecutive failures an on-demand name is dropped: it is no longer
    /// tried until its (fleet-wide) backoff has passed and a handshake asks for it again.
    /// Default 3.
    pub max_failures: u32,
    /// An on-demand name no handshake asked for during this long is no longer renewed by
    /// this node (its certificate stays in storage). Default 7 days.
    pub forget_after: Duration,
}

impl fmt::Debug for OnDemandConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnDemandConfig")
            .field("decide", &self.decide.is_some())
            .field("ask_url", &self.ask_url)
            .field("rate_limit", &self.rate_limit)
            .field("rate_interval", &self.rate_interval)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_failures", &self.max_failures)
            .field("forget_after", &self.forget_after)
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
            max_failures: 3,
            forget_after: Duration::from_secs(7 * 86_400),
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

    /// Drops a name after `failures` consecutive failures (at least 1).
    pub fn with_max_failures(mut self, failures: u32) -> Self {
        self.max_failures = failures.max(1);
        self
    }

    /// Stops renewing a name no handshake asked for during `period`.
    pub fn with_forget_after(mut self, period: Duration) -> Self {
        self.forget_after = period;
        self
    }
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
}
