//! Backoff after failures, per name and shared by the fleet through storage.
//!
//! Each failed issuance doubles the name's pause ([`RetryPolicy`](super::RetryPolicy)) up
//! to its cap, and the state is stored at `maintenance/backoff/<name>.json`, so every node
//! that shares the storage waits as well instead of placing its own order. The state is
//! read under the name's lock right before an order (never on the handshake path or in a
//! steady renewal pass) and removed by the next success.

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{CertManager, Event, ManageError};
use crate::certificate::system_to_unix;
use crate::issuer::IssueError;
use crate::{Error, Lease, StorageExt, keys};

/// The fleet's backoff state of one name, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct SharedBackoff {
    /// Consecutive failures.
    failures: u32,
    /// No attempt before this time, seconds since the Unix epoch.
    next_attempt: i64,
    /// The last failure.
    error: String,
}

impl CertManager {
    /// Reads the fleet's backoff for `name` (under its lock): [`ManageError::BackingOff`]
    /// while it runs, else whether a state exists that a success must remove. This node
    /// adopts the fleet's failure count, so its next failure continues the series.
    pub(super) async fn check_backoff(&self, name: &str) -> Result<bool, ManageError> {
        let key = keys::backoff(name);
        let Some(bytes) = self.inner.storage.load_opt(&key).await? else {
            return Ok(false);
        };
        // An unreadable state is replaced by the next failure or removed by a success.
        let Ok(state) = serde_json::from_slice::<SharedBackoff>(&bytes) else {
            return Ok(true);
        };
        let now = system_to_unix(SystemTime::now());
        let retry_in = Duration::from_secs(state.next_attempt.saturating_sub(now).max(0) as u64);
        self.adopt_failures(name, state.failures, retry_in);
        if retry_in.is_zero() {
            Ok(true)
        } else {
            Err(ManageError::BackingOff {
                name: name.to_owned(),
                failures: state.failures,
                retry_in,
            })
        }
    }

    fn adopt_failures(&self, name: &str, failures: u32, retry_in: Duration) {
        if let Some(state) = self.inner.names.lock().get_mut(name) {
            state.failures = state.failures.max(failures);
            if !retry_in.is_zero() {
                state.next_attempt = Some(Instant::now() + retry_in);
            }
        }
    }

    /// Removes the fleet's backoff state of `name` after a success.
    pub(super) async fn clear_backoff(&self, name: &str, lease: &Lease) {
        match self
            .inner
            .storage
            .delete_fenced(&keys::backoff(name), lease)
            .await
        {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(err) => tracing::warn!(name, error = %err, "removing the backoff state failed"),
        }
    }

    /// Counts a failure of `name`: sets this node's next attempt, shares the backoff with
    /// the fleet when an issuer failed, drops an on-demand name that failed too often, and
    /// emits [`Event::Failed`].
    pub(super) async fn record_failure(
        &self,
        name: &str,
        issuer: Option<String>,
        err: &ManageError,
    ) {
        let retry = self.inner.config.retry;
        let (retry_in, failures, drop_name) = match err {
            // The state was read from storage and adopted already.
            ManageError::BackingOff {
                retry_in, failures, ..
            } => (Some(*retry_in), *failures, false),
            _ => {
                let max_failures = self
                    .inner
                    .on_demand
                    .lock()
                    .as_ref()
                    .map(|o| o.config.max_failures);
                let mut names = self.inner.names.lock();
                match names.get_mut(name) {
                    Some(state) => {
                        state.failures = state.failures.saturating_add(1);
                        let mut delay = retry.delay(state.failures);
                        if let ManageError::Issue {
                            last:
                                IssueError::Temporary {
                                    retry_after: Some(after),
                                    ..
                                },
                            ..
                        } = err
                        {
                            delay = delay.max(*after);
                        }
                        state.next_attempt = Some(Instant::now() + delay);
                        let drop_name = state.on_demand
                            && state.served.is_none()
                            && max_failures.is_some_and(|max| state.failures >= max);
                        (Some(delay), state.failures, drop_name)
                    }
                    None => (None, 0, false),
                }
            }
        };
        // Only a failed issuance is shared: a storage outage cannot be written down, and a
        // lost lease means another node holds the lock and is at work.
        if let (ManageError::Issue { .. }, Some(delay)) = (err, retry_in) {
            let state = SharedBackoff {
                failures,
                next_attempt: system_to_unix(SystemTime::now() + delay),
                error: err.to_string(),
            };
            if let Err(store_err) = self
                .inner
                .storage
                .store_json(&keys::backoff(name), &state)
                .await
            {
                tracing::warn!(name, error = %store_err, "sharing the backoff state failed");
            }
        }
        if drop_name {
            self.drop_on_demand(name, retry_in.unwrap_or_default());
        }
        // An issuer's failure was counted with its issuer as it happened.
        if !matches!(err, ManageError::Issue { .. }) {
            crate::metrics::certificate_failed(issuer.as_deref().unwrap_or("none"), err.kind());
        }
        self.emit(Event::Failed {
            name: name.to_owned(),
            issuer,
            error: err.to_string(),
            retry_in,
        });
    }
}
