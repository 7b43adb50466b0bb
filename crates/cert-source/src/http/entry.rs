//! What an [`HttpSource`](super::HttpSource) holds in memory per server name: fresh,
//! negative and stale entries, and how room is made when the cache is full.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use cert_core::rustls::sign::CertifiedKey;

use super::Inner;
use crate::bundle::Validated;

/// What the source holds for one name ([`HttpSource::entry`](super::HttpSource::entry)).
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

/// What is held for one name.
pub(super) struct Entry {
    /// `None`: a remembered `204`.
    pub(super) cert: Option<Arc<CertifiedKey>>,
    /// Fresh until then.
    pub(super) expires: SystemTime,
    /// Served until then (later than `expires` only while stale-if-error applies).
    pub(super) serve_until: SystemTime,
    /// The certificate's not-after.
    pub(super) not_after: SystemTime,
    /// While stale: when the backend may be asked again.
    pub(super) retry_at: SystemTime,
}

/// What `Inner::state` finds for a name at a given moment.
pub(super) enum State {
    Fresh(Option<Arc<CertifiedKey>>),
    Stale {
        cert: Arc<CertifiedKey>,
        retry_due: bool,
    },
    Missing,
}

impl Entry {
    pub(super) fn positive(validated: &Validated, expires: SystemTime) -> Self {
        Entry {
            cert: Some(Arc::clone(&validated.certified)),
            expires,
            serve_until: expires,
            not_after: validated.not_after,
            retry_at: expires,
        }
    }

    pub(super) fn negative(until: SystemTime) -> Self {
        Entry {
            cert: None,
            expires: until,
            serve_until: until,
            not_after: until,
            retry_at: until,
        }
    }
}

impl Inner {
    /// What is held for `name` at `now`.
    pub(super) fn state(&self, name: &str, now: SystemTime) -> State {
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
    pub(super) fn put(
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
}
