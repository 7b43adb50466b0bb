//! Key checks: a storage remembers which keys sealed it, so a node configured with the
//! wrong key refuses to write instead of sealing values no other node can open.
//!
//! # Design
//!
//! Key ids are derived from the keys, so a wrong key has its own id and nothing in an
//! envelope tells "a new key" from "a mistaken key". Each key that seals values in a
//! storage therefore leaves a *check value* there: the fixed text [`CHECK_VALUE`] sealed
//! by that key under `cert-encrypted/keycheck/<key id>` ([`KEYCHECK_PREFIX`]). Before the
//! first write of an [`Encrypted`] value (and its clones), and before a re-keying:
//!
//! 1. every check value whose id the ring holds must open with the ring's key for that
//!    id (this catches a wrong key given an explicit id that is already in use);
//! 2. when the storage holds check values, at least one must belong to a key of the ring
//!    (this catches a wrong key with its own id: it knows none of the keys that sealed
//!    the storage);
//! 3. when it holds none yet (a new storage, or one sealed before check values existed),
//!    a few existing envelopes must open with the ring: a node must not write its check
//!    value over a storage sealed by keys it does not have;
//! 4. the current key's check value is written if missing.
//!
//! A rotation passes: the new key's check value is written by a node whose ring also
//! holds the old key, whose check value opens. Check values of retired keys stay; they
//! are small and keep telling which keys once sealed the storage. Two nodes writing the
//! *first* check values of a new storage at the same moment with different keys cannot
//! be told apart (storages offer no compare-and-swap); the next node to start with
//! either key sees the conflict only if it holds neither.
//!
//! Check values are hidden from [`Encrypted`]'s listings, so tools that copy, list or
//! re-key values never see them; the inner storage lists them.

use std::sync::atomic::Ordering;

use cert_core::{Error, Result, Storage};

use crate::encrypted::Encrypted;
use crate::envelope::{OpenError, looks_sealed};
use crate::key::KeyId;

/// The prefix below which check values live: `cert-encrypted/keycheck/<key id>`. Keys
/// below it are reserved: [`Encrypted`] hides them from listings.
pub const KEYCHECK_PREFIX: &str = "cert-encrypted/keycheck";

/// The text every check value seals.
pub const CHECK_VALUE: &[u8] = b"certstore-encrypted key check v1";

/// How many existing envelopes are tried on a storage with no check value yet.
const PROBES: usize = 8;

/// The storage key of `id`'s check value.
pub fn keycheck_key(id: KeyId) -> String {
    format!("{KEYCHECK_PREFIX}/{id}")
}

/// Whether `key` is a check value or their prefix, hidden from listings.
pub(crate) fn is_reserved(key: &str) -> bool {
    key == KEYCHECK_PREFIX
        || key
            .strip_prefix(KEYCHECK_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Why the keys of a ring were refused for writing. Carried as the `source` of
/// [`Error::Backend`] (backend `encrypted`); downcast it. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyCheckError {
    /// The ring's key for `key_id` does not open that id's check value: a different key
    /// was given the same (explicit) id.
    #[error(
        "the configured key with id {key_id} is not the key that first sealed values under that id here ({key} does not open with it): fix the key before writing"
    )]
    WrongKey {
        /// The id.
        key_id: KeyId,
        /// The check value's storage key.
        key: String,
    },
    /// The storage was sealed by keys none of which the ring holds.
    #[error(
        "this storage was sealed by key(s) {}, and none of them is configured (configured: {}): writing now would seal values the other nodes cannot open; set the current key to one of those, or keep one as a previous key during a rotation",
        ids(.stored),
        ids(.configured)
    )]
    NoKnownKey {
        /// The ids with a check value in the storage.
        stored: Vec<KeyId>,
        /// The ids of the ring.
        configured: Vec<KeyId>,
    },
    /// A value already stored does not open with the ring (checked on storages without
    /// check values yet).
    #[error(
        "{key} does not open with the configured keys ({reason}): writing now would mix keys; configure the key that sealed it"
    )]
    ExistingValue {
        /// The storage key of the value.
        key: String,
        /// Why it does not open.
        reason: OpenError,
    },
}

fn ids(ids: &[KeyId]) -> String {
    let shown: Vec<String> = ids.iter().map(ToString::to_string).collect();
    shown.join(", ")
}

fn refused(err: KeyCheckError) -> Error {
    Error::backend("encrypted", err)
}

impl<S: Storage> Encrypted<S> {
    /// Checks that the ring's keys fit what the storage was sealed with, and records the
    /// current key (see the [module docs](crate::keycheck) for the rules). Runs once per
    /// `Encrypted` value and its clones, before the first write; call it directly to
    /// check at start-up.
    ///
    /// Fails with [`Error::Backend`] whose source is a [`KeyCheckError`], or with the
    /// inner storage's error.
    pub async fn verify_keys(&self) -> Result<()> {
        if self.checked_flag().load(Ordering::Acquire) {
            return Ok(());
        }
        let ring = self.ring();
        let configured = ring.ids();
        let current = ring.current_id();
        let mut stored = Vec::new();
        let mut matched = false;
        let mut current_recorded = false;
        for entry in self.inner().list(KEYCHECK_PREFIX, false).await? {
            let Some(id) = entry
                .strip_prefix(KEYCHECK_PREFIX)
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|id| id.parse::<KeyId>().ok())
            else {
                continue;
            };
            stored.push(id);
            if !configured.contains(&id) {
                continue;
            }
            let raw = match self.inner().load(&entry).await {
                Ok(raw) => raw,
                Err(Error::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            };
            match ring.open(&entry, &raw) {
                Ok(value) if value == CHECK_VALUE => {
                    matched = true;
                    current_recorded |= id == current;
                }
                _ => {
                    return Err(refused(KeyCheckError::WrongKey {
                        key_id: id,
                        key: entry,
                    }));
                }
            }
        }
        if !stored.is_empty() && !matched {
            return Err(refused(KeyCheckError::NoKnownKey { stored, configured }));
        }
        if stored.is_empty() {
            self.probe_existing().await?;
        }
        if !current_recorded {
            let key = keycheck_key(current);
            let sealed = ring.seal(&key, CHECK_VALUE)?;
            self.inner().store(&key, &sealed).await?;
        }
        self.checked_flag().store(true, Ordering::Release);
        Ok(())
    }

    /// On a storage without check values: a few existing envelopes must open.
    async fn probe_existing(&self) -> Result<()> {
        let mut tried = 0;
        for key in self.inner().list("", true).await? {
            if tried == PROBES {
                break;
            }
            if is_reserved(&key) {
                continue;
            }
            let raw = match self.inner().load(&key).await {
                Ok(raw) => raw,
                Err(Error::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            };
            // Plain values (a storage being encrypted in place) say nothing about keys.
            if !looks_sealed(&raw) {
                continue;
            }
            tried += 1;
            match self.ring().open(&key, &raw) {
                Ok(_) => return Ok(()),
                // Sealed for another storage key: damage, not a key problem; the load
                // of that value reports it.
                Err(OpenError::KeyMismatch { .. }) => {}
                Err(reason) => return Err(refused(KeyCheckError::ExistingValue { key, reason })),
            }
        }
        Ok(())
    }
}
