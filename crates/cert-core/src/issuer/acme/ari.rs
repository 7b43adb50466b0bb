//! ACME Renewal Information (RFC 9773): the renewal window the CA suggests for a
//! certificate, asked for by one node at a time and shared with the others in storage.
//!
//! Each node also keeps the windows it knows in memory until their refresh time (the
//! CA's `Retry-After`, 1 minute to 1 day): a renewal pass reads storage only for the
//! certificates whose window is due for a refresh, so a steady fleet's storage traffic
//! for renewal information grows with the refreshes, not with names times passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use instant_acme::CertificateIdentifier;
use serde::{Deserialize, Serialize};

use super::AcmeIssuer;
use crate::certificate::{system_to_unix, unix_to_system};
use crate::lock::{LockOptions, try_lock};
use crate::{Locker, StorageExt, keys};

/// The renewal windows this node knows, by certificate identifier, with their refresh
/// times: served from memory until then.
#[derive(Debug, Default)]
pub(super) struct Windows {
    known: Mutex<HashMap<String, StoredWindow>>,
}

/// How long past its refresh time an unused window is kept (the certificate was
/// replaced, or the name is no longer managed) before a sweep drops it.
const FORGET_AFTER: i64 = 2 * 86_400;

impl Windows {
    /// The window of `id` while it needs no refresh at `now`.
    fn current(&self, id: &str, now: i64) -> Option<StoredWindow> {
        self.known
            .lock()
            .get(id)
            .filter(|window| window.refresh_at > now)
            .cloned()
    }

    /// Remembers the window of `id`; when the map has grown, drops the windows nobody
    /// refreshed for a long time.
    fn remember(&self, id: String, window: StoredWindow, now: i64) {
        let mut known = self.known.lock();
        if known.len() >= 1024 && known.len().is_power_of_two() {
            known.retain(|_, w| w.refresh_at.saturating_add(FORGET_AFTER) > now);
        }
        known.insert(id, window);
    }
}

/// The renewal window of one certificate as the CA suggested it, shared in storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredWindow {
    start: i64,
    end: i64,
    /// When to ask the CA again (unix seconds).
    refresh_at: i64,
}

impl AcmeIssuer {
    /// The ARI identifier of the certificate currently stored for `name`, if any.
    pub(super) async fn stored_cert_id(
        &self,
        name: &str,
    ) -> Option<CertificateIdentifier<'static>> {
        let chain = self.stored_chain(name).await.ok()??;
        cert_id(&chain)
    }

    pub(super) async fn ari_window(&self, chain_pem: &str) -> Option<(SystemTime, SystemTime)> {
        if !self.config.renewal_info {
            return None;
        }
        let id = cert_id(chain_pem)?;
        let segment = keys::safe_segment(&id.to_string());
        let now = system_to_unix(SystemTime::now());
        if let Some(window) = self.windows.current(&segment, now) {
            return Some(window_times(&window));
        }
        let key = format!(
            "{}/{}/renewal-info/{segment}",
            keys::ACME,
            keys::issuer_key(&self.config.directory_url),
        );
        let stored: Option<StoredWindow> = match self.storage.load_opt(&key).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            _ => None,
        };
        if let Some(window) = &stored
            && window.refresh_at > now
        {
            self.windows.remember(segment, window.clone(), now);
            return Some(window_times(window));
        }
        // One node asks the CA; the others keep what is stored meanwhile.
        let locker: Arc<dyn Locker> = self.storage.clone();
        let guard = match try_lock(locker, &format!("ari/{segment}"), &LockOptions::default()).await
        {
            Ok(Some(guard)) => guard,
            _ => return stored.as_ref().map(window_times),
        };
        let result = async {
            let account = self.account().await.ok()?;
            let (info, retry) = match account.renewal_info(&id).await {
                Ok(found) => found,
                Err(err) => {
                    tracing::debug!(error = %err, "renewal information unavailable");
                    return stored.as_ref().map(window_times);
                }
            };
            let retry = retry.clamp(Duration::from_secs(60), Duration::from_secs(86_400));
            let window = StoredWindow {
                start: info.suggested_window.start.unix_timestamp(),
                end: info.suggested_window.end.unix_timestamp(),
                refresh_at: now.saturating_add(i64::try_from(retry.as_secs()).unwrap_or(86_400)),
            };
            let lease = guard.lease();
            let stored = match serde_json::to_vec(&window) {
                Ok(bytes) => self.storage.store_fenced(&key, &bytes, &lease).await,
                Err(err) => Err(crate::Error::backend("json", err)),
            };
            match stored {
                Ok(()) => self.windows.remember(segment.clone(), window.clone(), now),
                Err(err) => tracing::warn!(error = %err, "storing renewal information failed"),
            }
            Some(window_times(&window))
        }
        .await;
        let _ = guard.release().await;
        result
    }
}

fn window_times(window: &StoredWindow) -> (SystemTime, SystemTime) {
    let start = unix_to_system(window.start);
    (start, unix_to_system(window.end.max(window.start)))
}

/// The ARI identifier (authority key identifier and serial) of a chain's leaf.
fn cert_id(chain_pem: &str) -> Option<CertificateIdentifier<'static>> {
    use x509_parser::extensions::ParsedExtension;
    let chain = crate::certificate::parse_chain(chain_pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })?;
    let serial = cert.tbs_certificate.raw_serial();
    Some(
        CertificateIdentifier::new(
            rustls::pki_types::Der::from_slice(aki),
            rustls::pki_types::Der::from_slice(serial),
        )
        .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(refresh_at: i64) -> StoredWindow {
        StoredWindow {
            start: 0,
            end: 1,
            refresh_at,
        }
    }

    #[test]
    fn windows_are_served_until_their_refresh_then_forgotten_when_unused() {
        let windows = Windows::default();
        let now = 1_000_000;
        windows.remember("live".into(), window(now + 60), now);
        assert!(windows.current("live", now).is_some());
        assert!(
            windows.current("live", now + 60).is_none(),
            "due for a refresh"
        );
        assert!(windows.current("other", now).is_none());

        // Windows of replaced certificates are never refreshed: once the map has grown,
        // those long past their refresh time go.
        let stale = now - FORGET_AFTER - 1;
        for i in 0..1023 {
            windows.remember(format!("old-{i}"), window(stale), now);
        }
        assert_eq!(windows.known.lock().len(), 1024);
        windows.remember("new".into(), window(now + 60), now);
        let known = windows.known.lock();
        assert_eq!(known.len(), 2, "{:?}", known.keys().collect::<Vec<_>>());
        assert!(known.contains_key("live") && known.contains_key("new"));
    }
}
