//! [`KeyRing`]: one key seals, any number of older keys still open.

use std::fmt;

use cert_core::{Error, MAX_VALUE_LEN, Result, validate_key};
use crypto_secretbox::aead::AeadInPlace;
use crypto_secretbox::{Nonce, Tag};
use zeroize::Zeroizing;

use crate::envelope::{
    Envelope, HEADER_LEN, KEY_LEN_PREFIX, MAGIC, NONCE_LEN, OpenError, TAG_LEN, VERSION, overhead,
};
use crate::key::{KeyError, KeyId};
use crate::secret_key::SecretKey;

/// The keys an [`Encrypted`](crate::Encrypted) storage uses: the current key seals every
/// new value; the current key and every previous key open values.
///
/// Rotation: make the new key current and keep the old one as previous, deploy that ring
/// to every node, run [`Encrypted::rekey`](crate::Encrypted::rekey), then drop the old
/// key. `Debug` shows key ids only.
#[derive(Clone)]
pub struct KeyRing {
    current: SecretKey,
    previous: Vec<SecretKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<KeyId> = self.previous.iter().map(SecretKey::id).collect();
        f.debug_struct("KeyRing")
            .field("current", &self.current.id())
            .field("previous", &previous)
            .finish()
    }
}

impl KeyRing {
    /// A ring holding only `current`.
    pub fn new(current: SecretKey) -> Self {
        KeyRing {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds an older key that still opens values. Adding a key already in the ring is a
    /// no-op; a different key with an id already in the ring is refused with
    /// [`KeyError::DuplicateId`].
    pub fn with_previous(mut self, key: SecretKey) -> Result<Self, KeyError> {
        match self.get(key.id()) {
            Some(existing) if *existing == key => Ok(self),
            Some(_) => Err(KeyError::DuplicateId(key.id())),
            None => {
                self.previous.push(key);
                Ok(self)
            }
        }
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> KeyId {
        self.current.id()
    }

    /// Every id the ring can open, the current one first.
    pub fn ids(&self) -> Vec<KeyId> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(SecretKey::id)
            .collect()
    }

    fn get(&self, id: KeyId) -> Option<&SecretKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id() == id)
    }

    /// Seals `value` for `storage_key` under the current key with a fresh random nonce.
    ///
    /// Fails with [`Error::InvalidKey`] for a bad storage key, [`Error::TooLarge`] naming
    /// the storage key when the envelope would exceed [`MAX_VALUE_LEN`], or
    /// [`Error::Backend`] when the OS random source fails. In `TooLarge`, `size` is the
    /// value's size and `limit` is [`MAX_VALUE_LEN`] when the value alone exceeds it,
    /// else the largest value that fits under this storage key
    /// (`MAX_VALUE_LEN - overhead(storage_key)`).
    pub fn seal(&self, storage_key: &str, value: &[u8]) -> Result<Vec<u8>> {
        validate_key(storage_key)?;
        let overhead = overhead(storage_key);
        let limit = MAX_VALUE_LEN.saturating_sub(overhead);
        if value.len() > limit {
            return Err(Error::TooLarge {
                key: storage_key.to_owned(),
                size: value.len(),
                // Over the global limit: report it, as every backend does. Under it but
                // too large once sealed: report the largest value that fits this key.
                limit: if value.len() > MAX_VALUE_LEN {
                    MAX_VALUE_LEN
                } else {
                    limit
                },
            });
        }
        // validate_key bounds keys to 1024 bytes, far below u16::MAX.
        let key_len = u16::try_from(storage_key.len()).map_err(|_| Error::TooLarge {
            key: storage_key.to_owned(),
            size: value.len(),
            limit,
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|err| Error::backend("encrypted", err))?;

        let mut out = Vec::with_capacity(overhead + value.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(self.current.id().as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&[0u8; TAG_LEN]);
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(storage_key.as_bytes());
        out.extend_from_slice(value);

        let (head, payload) = out.split_at_mut(HEADER_LEN + TAG_LEN);
        let tag = self
            .current
            .cipher()
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", payload)
            .map_err(|_| {
                Error::backend(
                    "encrypted",
                    std::io::Error::other("secretbox refused to seal"),
                )
            })?;
        head[HEADER_LEN..].copy_from_slice(tag.as_slice());
        Ok(out)
    }

    /// Opens an envelope sealed for `storage_key` with any key of the ring.
    ///
    /// Never panics and never returns wrong plaintext: anything that does not
    /// authenticate, or that was sealed for another storage key, is an [`OpenError`].
    pub fn open(&self, storage_key: &str, envelope: &[u8]) -> Result<Vec<u8>, OpenError> {
        let parsed = Envelope::parse(envelope)?;
        let key_id = parsed.key_id();
        let key = self.get(key_id).ok_or(OpenError::UnknownKeyId { key_id })?;
        let mut payload = Zeroizing::new(parsed.ciphertext().to_vec());
        key.cipher()
            .decrypt_in_place_detached(
                Nonce::from_slice(parsed.nonce()),
                b"",
                &mut payload[..],
                Tag::from_slice(parsed.tag()),
            )
            .map_err(|_| OpenError::Tampered { key_id })?;

        let mismatch = |sealed_for: Option<String>| OpenError::KeyMismatch { key_id, sealed_for };
        let Some((len, rest)) = payload.split_first_chunk::<KEY_LEN_PREFIX>() else {
            return Err(mismatch(None));
        };
        let bound_len = usize::from(u16::from_be_bytes(*len));
        let Some(bound) = rest.get(..bound_len) else {
            return Err(mismatch(None));
        };
        if bound != storage_key.as_bytes() {
            return Err(mismatch(Some(String::from_utf8_lossy(bound).into_owned())));
        }
        let mut value = std::mem::take(&mut *payload);
        value.drain(..KEY_LEN_PREFIX + bound_len);
        Ok(value)
    }

    /// The id of the key that sealed `envelope`, if it parses as one.
    pub fn sealed_by(envelope: &[u8]) -> Option<KeyId> {
        Envelope::parse(envelope).ok().map(|e| e.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(SecretKey::from_bytes([1; 32]))
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let ring = ring();
        let a = ring.seal("k/a", b"hello").unwrap();
        let b = ring.seal("k/a", b"hello").unwrap();
        assert_ne!(a, b, "every seal draws a fresh nonce");
        assert_eq!(a.len(), overhead("k/a") + 5);
        assert_eq!(ring.open("k/a", &a).unwrap(), b"hello");
        assert_eq!(ring.open("k/a", &b).unwrap(), b"hello");
        let empty = ring.seal("k", b"").unwrap();
        assert_eq!(ring.open("k", &empty).unwrap(), b"");
    }

    #[test]
    fn binds_the_storage_key() {
        let ring = ring();
        let sealed = ring.seal("k/a", b"v").unwrap();
        assert_eq!(
            ring.open("k/b", &sealed),
            Err(OpenError::KeyMismatch {
                key_id: ring.current_id(),
                sealed_for: Some("k/a".into())
            })
        );
    }

    #[test]
    fn too_large_names_the_key() {
        let ring = ring();
        let limit = MAX_VALUE_LEN - overhead("big");
        assert!(ring.seal("big", &vec![0; limit]).is_ok());
        match ring.seal("big", &vec![0; MAX_VALUE_LEN + 1]) {
            Err(Error::TooLarge {
                size, limit: got, ..
            }) => {
                assert_eq!(size, MAX_VALUE_LEN + 1);
                assert_eq!(got, MAX_VALUE_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        match ring.seal("big", &vec![0; limit + 1]) {
            Err(Error::TooLarge {
                key,
                size,
                limit: got,
            }) => {
                assert_eq!(key, "big");
                assert_eq!(size, limit + 1);
                assert_eq!(got, limit);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(
            ring.seal("/bad", b""),
            Err(Error::InvalidKey { .. })
        ));
    }

    #[test]
    fn duplicate_ids() {
        let a = SecretKey::from_bytes([1; 32]);
        let id = a.id();
        let ring = KeyRing::new(a.clone()).with_previous(a).unwrap();
        assert_eq!(ring.ids(), vec![id]);
        let other = SecretKey::from_bytes([2; 32]).with_id(id);
        assert!(matches!(
            ring.with_previous(other),
            Err(KeyError::DuplicateId(dup)) if dup == id
        ));
    }

    #[test]
    fn debug_lists_ids_only() {
        let ring = ring()
            .with_previous(SecretKey::from_bytes([2; 32]))
            .unwrap();
        let shown = format!("{ring:?}");
        for id in ring.ids() {
            assert!(shown.contains(&id.to_string()), "{shown}");
        }
        assert!(!shown.contains("1, 1, 1"), "{shown}");
        assert!(!shown.contains("2, 2, 2"), "{shown}");
    }
}
