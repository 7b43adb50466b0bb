//! The warm copy: each fetched certificate kept in a [`Storage`](cert_core::Storage) as a
//! JSON record, read back at start or before asking the backend, written and deleted in
//! tasks of their own, at most [`HttpSourceConfig::max_pending_writes`] at once.
//!
//! [`HttpSourceConfig::max_pending_writes`]: super::HttpSourceConfig::max_pending_writes

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cert_core::{StorageExt, keys};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;
use zeroize::Zeroizing;

use super::entry::Entry;
use super::{HttpSource, Inner, SourceEvent};
use crate::SourceError;
use crate::bundle::{Validated, normalize_name, validate_pem};

/// A warm copy read back from storage, checked, with the expiry it was stored with.
pub(super) struct WarmCopy {
    pub(super) validated: Validated,
    pub(super) pem: Zeroizing<String>,
    pub(super) expires: SystemTime,
}

#[derive(Serialize)]
struct WarmRecordRef<'a> {
    server_name: &'a str,
    expires_ms: u64,
    pem: &'a str,
}

#[derive(Deserialize)]
struct WarmRecord {
    server_name: String,
    expires_ms: u64,
    pem: String,
}

fn to_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Reads a warm copy; `expected` is the server name it must be for, when known.
fn parse_warm(
    key: &str,
    bytes: &[u8],
    expected: Option<&str>,
) -> Result<(String, WarmCopy), SourceError> {
    let record: WarmRecord = serde_json::from_slice(bytes)
        .map_err(|err| SourceError::Storage(Arc::new(cert_core::Error::corrupt(key, err))))?;
    let pem = Zeroizing::new(record.pem);
    let name = normalize_name(&record.server_name)
        .ok_or_else(|| SourceError::InvalidName(record.server_name.clone()))?;
    if expected.is_some_and(|expected| expected != name) {
        return Err(SourceError::NameMismatch { name });
    }
    let validated = validate_pem(&pem, &pem)?;
    if !validated.covers(&name) {
        return Err(SourceError::NameMismatch { name });
    }
    let expires = from_millis(record.expires_ms).min(validated.not_after);
    Ok((
        name,
        WarmCopy {
            validated,
            pem,
            expires,
        },
    ))
}

impl HttpSource {
    /// Loads every unexpired warm copy from storage into memory, keeping each one's
    /// original expiry, and returns how many were loaded. Nothing to do without storage.
    pub async fn warm_from_storage(&self) -> Result<usize, SourceError> {
        let Some(storage) = &self.inner.config.storage else {
            return Ok(0);
        };
        let found = match storage.list(&self.inner.prefix, true).await {
            Ok(found) => found,
            Err(cert_core::Error::NotFound { .. }) => return Ok(0),
            Err(err) => return Err(SourceError::Storage(Arc::new(err))),
        };
        let mut loaded = 0;
        for key in found {
            let Some(bytes) = storage
                .load_opt(&key)
                .await
                .map_err(|err| SourceError::Storage(Arc::new(err)))?
            else {
                continue;
            };
            let bytes = Zeroizing::new(bytes);
            let (name, copy) = match parse_warm(&key, &bytes, None) {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(key, error = %err, "unusable warm copy skipped");
                    continue;
                }
            };
            let now = SystemTime::now();
            if copy.expires <= now {
                continue;
            }
            let mut entries = self.inner.entries.write();
            if entries
                .get(name.as_str())
                .is_some_and(|e| e.expires >= copy.expires)
            {
                continue;
            }
            self.inner.put(
                &mut entries,
                &name,
                Entry::positive(&copy.validated, copy.expires),
                now,
            );
            drop(entries);
            self.inner.emit(SourceEvent::Loaded {
                name,
                expires: copy.expires,
            });
            loaded += 1;
        }
        Ok(loaded)
    }
}

impl Inner {
    /// The storage key of the warm copy for `name`.
    pub(super) fn warm_key(&self, name: &str) -> String {
        format!("{}/{}.json", self.prefix, keys::safe_name(name))
    }

    /// The warm copy of `name` from storage, fresh or expired; `None` without storage,
    /// when there is none, or when it cannot be read (reported as
    /// [`SourceEvent::StorageFailed`]).
    pub(super) async fn load_warm(&self, name: &str) -> Option<WarmCopy> {
        let storage = self.config.storage.as_ref()?;
        let key = self.warm_key(name);
        match storage.load_opt(&key).await {
            Ok(Some(bytes)) => {
                let bytes = Zeroizing::new(bytes);
                match parse_warm(&key, &bytes, Some(name)) {
                    Ok((_, copy)) => Some(copy),
                    Err(err) => {
                        self.emit(SourceEvent::StorageFailed {
                            name: name.to_owned(),
                            error: err.to_string(),
                        });
                        None
                    }
                }
            }
            Ok(None) => None,
            Err(err) => {
                self.emit(SourceEvent::StorageFailed {
                    name: name.to_owned(),
                    error: err.to_string(),
                });
                None
            }
        }
    }

    /// Writes the warm copy in a task of its own: the handshakes waiting for this fetch
    /// are not held up by storage.
    pub(super) fn persist(
        self: &Arc<Self>,
        name: &str,
        pem: Zeroizing<String>,
        expires: SystemTime,
    ) {
        let Some(storage) = self.config.storage.clone() else {
            return;
        };
        let Some(permit) = self.write_permit(name) else {
            return;
        };
        let inner = Arc::clone(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            let record = WarmRecordRef {
                server_name: &name,
                expires_ms: to_millis(expires),
                pem: &pem,
            };
            let result = match serde_json::to_vec(&record) {
                Ok(bytes) => {
                    let bytes = Zeroizing::new(bytes);
                    let key = inner.warm_key(&name);
                    storage.store(&key, &bytes).await.map_err(|e| e.to_string())
                }
                Err(err) => Err(err.to_string()),
            };
            match result {
                Ok(()) => inner.emit(SourceEvent::Persisted { name }),
                Err(error) => {
                    tracing::warn!(name, error, "could not store the warm copy");
                    inner.emit(SourceEvent::StorageFailed { name, error });
                }
            }
        });
    }

    /// A permit for one more warm-copy task, or `None` (logged) when storage is already
    /// busy with as many as allowed: skipping a copy costs one backend request later,
    /// while tasks without bound would grow with every new name a flood of handshakes
    /// brings.
    fn write_permit(&self, name: &str) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.writes).try_acquire_owned().ok();
        if permit.is_none() {
            tracing::debug!(
                name,
                "too many warm-copy writes pending; this one is skipped"
            );
        }
        permit
    }

    /// Deletes the warm copy of a name the backend no longer has, in a task of its own.
    pub(super) fn forget_warm(self: &Arc<Self>, name: &str) {
        let Some(storage) = self.config.storage.clone() else {
            return;
        };
        let Some(permit) = self.write_permit(name) else {
            return;
        };
        let key = self.warm_key(name);
        tokio::spawn(async move {
            let _permit = permit;
            match storage.delete(&key).await {
                Ok(()) | Err(cert_core::Error::NotFound { .. }) => {}
                Err(err) => tracing::warn!(key, error = %err, "could not delete a warm copy"),
            }
        });
    }
}
