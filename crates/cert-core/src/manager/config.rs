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
        crate::backoff::Backoff::new(self.initial, self.max, 1).pause(failures)
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
    /// How many names [`CertManager::manage`](super::CertManager::manage), a renewal pass
    /// and a cleaning pass work on at once. Default 16.
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
///
/// The policy is guarded against floods of unknown server names (anyone can send any SNI):
/// concurrent handshakes for one name share one decision, a denial is remembered for
/// [`deny_ttl`](Self::deny_ttl), and at most
/// [`max_concurrent_asks`](Self::max_concurrent_asks) decisions run at once; a handshake
/// beyond that is refused at once instead of waiting.
#[derive(Clone)]
#[non_exhaustive]
pub struct OnDemandConfig {
    /// The decision function.
    pub decide: Option<OnDemandDecision>,
    /// A URL asked with `GET <url>?domain=<name>`, `http://` or `https://`; any 2xx
    /// allows. An `https://` server is verified against the operating system's roots and
    /// [`ask_root_pem`](Self::ask_root_pem).
    pub ask_url: Option<String>,
    /// How long the ask URL may take. Default 5 s.
    pub ask_timeout: Duration,
    /// Extra roots (PEM) trusted for an `https://` ask URL besides the operating system's:
    /// a private CA. Set it with [`with_ask_root_pem`](Self::with_ask_root_pem), which
    /// checks it; an unusable value set directly is ignored with an error logged, so such
    /// a server fails verification and every name is denied.
    pub ask_root_pem: Option<String>,
    /// How long a denial (by the decision function, or an answer of the ask URL other than
    /// 2xx and 5xx) is remembered: the same name is refused without asking again until
    /// then. A failure of the ask URL (unreachable, too slow, 5xx) also refuses, but is
    /// not remembered, so an outage of the ask service does not lock names out. Zero
    /// remembers nothing. Default 5 minutes.
    pub deny_ttl: Duration,
    /// The most denials remembered; when full, the oldest is forgotten first. Default
    /// 10,000.
    pub deny_cache_size: usize,
    /// The most decisions (decision function and ask URL) running at once, for different
    /// names. A handshake for another new name beyond it is refused without asking (and
    /// the refusal is not remembered), so a flood of names cannot queue up behind the ask
    /// URL. Default 16.
    pub max_concurrent_asks: usize,
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
            .field("ask_timeout", &self.ask_timeout)
            .field("ask_root_pem", &self.ask_root_pem.is_some())
            .field("deny_ttl", &self.deny_ttl)
            .field("deny_cache_size", &self.deny_cache_size)
            .field("max_concurrent_asks", &self.max_concurrent_asks)
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
            ask_root_pem: None,
            deny_ttl: Duration::from_secs(300),
            deny_cache_size: 10_000,
            max_concurrent_asks: 16,
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

    /// Gives the ask URL at most `timeout` to answer.
    pub fn with_ask_timeout(mut self, timeout: Duration) -> Self {
        self.ask_timeout = timeout;
        self
    }

    /// Also trusts the certificates of `pem` as roots for an `https://` ask URL. Fails when
    /// `pem` holds no usable certificate.
    pub fn with_ask_root_pem(mut self, pem: impl Into<String>) -> std::io::Result<Self> {
        let pem = pem.into();
        crate::challenge::check_roots_pem(&pem)?;
        self.ask_root_pem = Some(pem);
        Ok(self)
    }

    /// Remembers a denial for `ttl` (zero: not at all).
    pub fn with_deny_ttl(mut self, ttl: Duration) -> Self {
        self.deny_ttl = ttl;
        self
    }

    /// Remembers at most `entries` denials.
    pub fn with_deny_cache_size(mut self, entries: usize) -> Self {
        self.deny_cache_size = entries;
        self
    }

    /// Runs at most `limit` decisions at once (at least 1).
    pub fn with_max_concurrent_asks(mut self, limit: usize) -> Self {
        self.max_concurrent_asks = limit.max(1);
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

    #[test]
    fn on_demand_flood_guards_have_defaults_and_builders() {
        let config = OnDemandConfig::default();
        assert_eq!(config.deny_ttl, Duration::from_secs(300));
        assert_eq!(config.deny_cache_size, 10_000);
        assert_eq!(config.max_concurrent_asks, 16);
        assert!(config.ask_root_pem.is_none());
        let config = config
            .with_deny_ttl(Duration::from_secs(1))
            .with_deny_cache_size(3)
            .with_max_concurrent_asks(0)
            .with_ask_timeout(Duration::from_millis(10));
        assert_eq!(config.deny_ttl, Duration::from_secs(1));
        assert_eq!(config.deny_cache_size, 3);
        assert_eq!(
            config.max_concurrent_asks, 1,
            "at least one decision can run"
        );
        assert_eq!(config.ask_timeout, Duration::from_millis(10));
        assert!(OnDemandConfig::default().with_ask_root_pem("junk").is_err());
    }
}
