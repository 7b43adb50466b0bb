//! On-demand TLS: certificates obtained during the first handshake for an allowed name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{CertManager, Event, ManageError, OnDemandConfig, normalize_name};
use crate::issuer::IssueError;

pub(super) struct OnDemandState {
    pub(super) config: OnDemandConfig,
    /// Start of the current rate window and the certificates started in it.
    window: Mutex<(Instant, u32)>,
    /// Names dropped after repeated failures, and until when they are not tried again.
    dropped: Mutex<HashMap<String, Instant>>,
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

    /// Whether `name` was dropped and its pause has not ended.
    fn is_dropped(&self, name: &str) -> bool {
        let mut dropped = self.dropped.lock();
        match dropped.get(name) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                dropped.remove(name);
                false
            }
            None => false,
        }
    }
}

impl CertManager {
    /// Turns on-demand TLS on (or replaces its configuration).
    pub fn enable_on_demand(&self, config: OnDemandConfig) {
        *self.inner.on_demand.lock() = Some(Arc::new(OnDemandState {
            config,
            window: Mutex::new((Instant::now(), 0)),
            dropped: Mutex::new(HashMap::new()),
        }));
    }

    /// The preparation step of [`accept_lazy`](crate::accept_lazy) for on-demand TLS: when
    /// `server_name` has no certificate in the cache and on-demand policy allows it, the
    /// certificate is loaded or obtained (once per name however many handshakes wait, and
    /// under the cluster lock), waiting at most the handshake timeout. Other names'
    /// handshakes are not affected.
    ///
    /// Names that can never be stored are refused first, before the decision function or
    /// the ask URL; a name that failed [`max_failures`](OnDemandConfig::max_failures) times
    /// is not tried again until its backoff has passed.
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
            self.manage_one(&name, true).await?;
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

    /// Stops working on an on-demand name that failed too often, until `pause` has passed
    /// and a handshake asks for it again.
    pub(super) fn drop_on_demand(&self, name: &str, pause: Duration) {
        let Some(on_demand) = self.inner.on_demand.lock().clone() else {
            return;
        };
        on_demand
            .dropped
            .lock()
            .insert(name.to_owned(), Instant::now() + pause);
        let removed = self.inner.names.lock().remove(name).is_some();
        if removed {
            tracing::warn!(name, "on-demand name dropped after repeated failures");
            self.emit(Event::Evicted {
                name: name.to_owned(),
            });
        }
    }
}
