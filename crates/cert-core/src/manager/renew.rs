//! The renewal pass: renews what is due, retries what failed once its backoff passed.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::StreamExt;

use super::CertManager;
use crate::certificate::CertificateMeta;

impl CertManager {
    /// One renewal pass now: renews every managed certificate inside its window whose
    /// backoff has passed, retries names that have no certificate yet once their backoff
    /// has passed, and stops renewing on-demand names no handshake asked for during
    /// [`forget_after`](super::OnDemandConfig::forget_after).
    pub async fn renew_due(&self) {
        self.forget_unrequested();
        let known: Vec<(String, CertificateMeta, Arc<str>)> = self
            .inner
            .names
            .lock()
            .iter()
            .filter_map(|(name, state)| {
                state
                    .served
                    .as_ref()
                    .map(|s| (name.clone(), s.meta.clone(), Arc::clone(&s.chain_pem)))
            })
            .collect();
        for (name, meta, chain_pem) in known {
            if let Some((start, end)) = self.issuer_window(&meta, &chain_pem).await
                && let Some(served) = self
                    .inner
                    .names
                    .lock()
                    .get_mut(&name)
                    .and_then(|state| state.served.as_mut())
                && served.meta.serial == meta.serial
                && !(start..=end).contains(&served.renew_at)
            {
                let span = end.duration_since(start).unwrap_or_default();
                served.renew_at = start + span.mul_f64(fastrand::f64());
            }
        }
        let now_wall = SystemTime::now();
        let now = Instant::now();
        let due: Vec<String> = self
            .inner
            .names
            .lock()
            .iter()
            .filter(|(_, state)| {
                state.next_attempt.is_none_or(|t| now >= t)
                    && state.served.as_ref().is_none_or(|s| now_wall >= s.renew_at)
            })
            .map(|(name, _)| name.clone())
            .collect();
        futures::stream::iter(due)
            .for_each_concurrent(self.inner.config.concurrency.max(1), |name| async move {
                if self.adopt_stored(&name).await {
                    return;
                }
                if let Err(err) = self.obtain(&name).await {
                    self.record_failure(&name, None, &err).await;
                }
            })
            .await;
        self.update_gauges();
    }

    /// Before any lock: when storage already holds a newer certificate for `name` that is
    /// not due (another node renewed or obtained it), serves it and returns true. So
    /// learning of another node's renewal costs one read, not a lock and a reload under
    /// it; anything else (nothing newer, a read failing) is left to
    /// [`obtain`](CertManager::obtain), which checks again under the lock.
    async fn adopt_stored(&self, name: &str) -> bool {
        let served = self.certificate_meta(name).map(|meta| meta.serial);
        let Ok(super::obtain::Found::Valid(loaded)) = self.load_stored(name).await else {
            return false;
        };
        if served.as_deref() == Some(loaded.stored.meta.serial.as_str())
            || self.due(&loaded.stored).await
        {
            return false;
        }
        self.serve_stored(name, &loaded, true).await;
        true
    }

    /// Unmanages on-demand names whose last handshake is older than `forget_after`.
    fn forget_unrequested(&self) {
        let Some(forget_after) = self
            .inner
            .on_demand
            .lock()
            .as_ref()
            .map(|o| o.config.forget_after)
        else {
            return;
        };
        let stale: Vec<String> = self
            .inner
            .names
            .lock()
            .iter()
            .filter(|(_, state)| state.on_demand && state.last_requested.elapsed() >= forget_after)
            .map(|(name, _)| name.clone())
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                count = stale.len(),
                "no longer renewing on-demand names no handshake asked for"
            );
            self.unmanage(stale);
        }
    }
}
