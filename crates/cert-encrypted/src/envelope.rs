//! The envelope: the bytes an [`Encrypted`](crate::Encrypted) storage writes in place of a
//! value, and the typed reasons one fails to open.

use std::fmt;

use crate::key::{KEY_ID_LEN, KeyId};

/// The four bytes every envelope starts with. The first is not valid ASCII or a UTF-8 lead
/// byte, so no PEM, JSON or text value can be mistaken for an envelope.
pub const MAGIC: [u8; 4] = [0x89, b'C', b'S', b'E'];

/// The envelope format version written by this crate.
pub const VERSION: u8 = 1;

/// Length of the XSalsa20 nonce in bytes.
pub const NONCE_LEN: usize = 24;

/// Length of the Poly1305 authentication tag in bytes.
pub const TAG_LEN: usize = 16;

/// Length of the clear header: magic, version, key id and nonce.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN + NONCE_LEN;

/// Length of the big-endian `u16` that prefixes the storage key inside the sealed payload.
pub const KEY_LEN_PREFIX: usize = 2;

/// The shortest possible envelope: header, tag and an empty payload (which itself can
/// never open, since a payload holds at least the key length).
pub const MIN_ENVELOPE_LEN: usize = HEADER_LEN + TAG_LEN;

/// How many bytes an envelope adds to a value stored under `key`: the fixed header and tag,
/// plus the bound storage key and its length. It depends only on the key's length, so
/// the size of a value can be computed from the size of its envelope without decrypting.
pub fn overhead(key: &str) -> usize {
    HEADER_LEN + TAG_LEN + KEY_LEN_PREFIX + key.len()
}

/// Why an envelope did not open. Carried as the `source` of
/// [`cert_core::Error::Corrupt`], whose `key` names the storage key; callers can
/// downcast to this type:
///
/// ```
/// # use cert_encrypted::OpenError;
/// fn why(err: &cert_core::Error) -> Option<&OpenError> {
///     match err {
///         cert_core::Error::Corrupt { source, .. } => source.downcast_ref::<OpenError>(),
///         _ => None,
///     }
/// }
/// # let err = cert_core::Error::corrupt("a", OpenError::NotAnEnvelope);
/// # assert_eq!(why(&err), Some(&OpenError::NotAnEnvelope));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The bytes do not start with [`MAGIC`]: a plain value, or something not written by
    /// this crate. A storage that held plaintext before it was wrapped is moved to
    /// encryption by reading it in plaintext migration mode
    /// ([`Encrypted::with_plaintext_migration`](crate::Encrypted::with_plaintext_migration))
    /// and sealing what is there with [`Encrypted::rekey`](crate::Encrypted::rekey).
    #[error(
        "the value is not sealed: the storage holds plaintext written without encryption \
         (or bytes not written by certstore); to encrypt plaintext values, open the storage \
         with `Encrypted::with_plaintext_migration(true)` and seal them with `Encrypted::rekey`"
    )]
    NotAnEnvelope,
    /// The envelope was written by a newer format version this crate cannot read.
    #[error("unsupported envelope version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The envelope is shorter than its fixed parts.
    #[error("the envelope is truncated: {len} bytes, at least {min} needed")]
    Truncated {
        /// The envelope's length.
        len: usize,
        /// The shortest valid length.
        min: usize,
    },
    /// The envelope was sealed by a key the ring does not hold.
    #[error("sealed by unknown key id {key_id}")]
    UnknownKeyId {
        /// The id written in the envelope.
        key_id: KeyId,
    },
    /// Authentication failed: the envelope was altered or truncated, or the key with
    /// this id is not the one that sealed it (a wrong key under a reused id).
    #[error(
        "authentication failed with key id {key_id}: the value was altered or the key is wrong"
    )]
    Tampered {
        /// The id of the key that was tried.
        key_id: KeyId,
    },
    /// The envelope authenticates but was sealed for another storage key: it was copied or
    /// moved.
    #[error("sealed with key id {key_id} for another storage key{}", sealed_for_suffix(.sealed_for))]
    KeyMismatch {
        /// The id of the key that opened it.
        key_id: KeyId,
        /// The storage key it was sealed for, when readable.
        sealed_for: Option<String>,
    },
}

fn sealed_for_suffix(sealed_for: &Option<String>) -> String {
    match sealed_for {
        Some(key) => format!(" ({key})"),
        None => String::new(),
    }
}

/// A parsed (not yet opened) envelope: the clear header fields and the secretbox.
///
/// Parsing checks the framing only; [`KeyRing::open`](crate::KeyRing::open) authenticates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    key_id: KeyId,
    nonce: &'a [u8; NONCE_LEN],
    tag: &'a [u8; TAG_LEN],
    ciphertext: &'a [u8],
}

impl fmt::Debug for Envelope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Envelope<'a> {
    /// Parses the framing of `bytes`. Never panics, whatever the input.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, OpenError> {
        if bytes.is_empty() {
            return Err(OpenError::NotAnEnvelope);
        }
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(OpenError::NotAnEnvelope);
        }
        let Some(&version) = bytes.get(MAGIC.len()) else {
            return Err(OpenError::Truncated {
                len: bytes.len(),
                min: MIN_ENVELOPE_LEN,
            });
        };
        if version != VERSION {
            return Err(OpenError::UnsupportedVersion { version });
        }
        let truncated = || OpenError::Truncated {
            len: bytes.len(),
            min: MIN_ENVELOPE_LEN,
        };
        let rest = &bytes[MAGIC.len() + 1..];
        let (key_id, rest) = rest
            .split_first_chunk::<KEY_ID_LEN>()
            .ok_or_else(truncated)?;
        let (nonce, rest) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(truncated)?;
        let (tag, ciphertext) = rest.split_first_chunk::<TAG_LEN>().ok_or_else(truncated)?;
        Ok(Envelope {
            key_id: KeyId::from_bytes(*key_id),
            nonce,
            tag,
            ciphertext,
        })
    }

    /// The id of the key that sealed it.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The 24-byte nonce.
    pub fn nonce(&self) -> &'a [u8; NONCE_LEN] {
        self.nonce
    }

    /// The 16-byte Poly1305 tag.
    pub fn tag(&self) -> &'a [u8; TAG_LEN] {
        self.tag
    }

    /// The encrypted payload (after the tag).
    pub fn ciphertext(&self) -> &'a [u8] {
        self.ciphertext
    }

    /// The size of the value inside, computed from the payload length: the payload less
    /// the bound key and its length prefix. `None` when the payload is too short to hold
    /// them (such an envelope cannot open for that key).
    pub fn value_len(&self, storage_key: &str) -> Option<usize> {
        self.ciphertext
            .len()
            .checked_sub(KEY_LEN_PREFIX + storage_key.len())
    }
}

/// Whether `bytes` start like an envelope (the magic, or a prefix of it for very short
/// values). Used by the migration mode to tell plain values from sealed ones.
pub fn looks_sealed(bytes: &[u8]) -> bool {
    !matches!(Envelope::parse(bytes), Err(OpenError::NotAnEnvelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_constants() {
        assert_eq!(HEADER_LEN, 37);
        assert_eq!(MIN_ENVELOPE_LEN, 53);
        assert_eq!(overhead("ab"), 53 + 2 + 2);
    }

    #[test]
    fn framing_errors() {
        assert_eq!(Envelope::parse(b""), Err(OpenError::NotAnEnvelope));
        assert_eq!(
            Envelope::parse(b"-----BEGIN"),
            Err(OpenError::NotAnEnvelope)
        );
        assert_eq!(
            Envelope::parse(&MAGIC[..2]),
            Err(OpenError::Truncated { len: 2, min: 53 })
        );
        assert_eq!(
            Envelope::parse(&[0x89, b'C', b'S', b'E', 9]),
            Err(OpenError::UnsupportedVersion { version: 9 })
        );
        let mut ok = MAGIC.to_vec();
        ok.push(VERSION);
        ok.extend_from_slice(&[7; KEY_ID_LEN + NONCE_LEN + TAG_LEN + 3]);
        let parsed = Envelope::parse(&ok).unwrap();
        assert_eq!(parsed.key_id(), KeyId::from_bytes([7; 8]));
        assert_eq!(parsed.ciphertext().len(), 3);
        assert_eq!(parsed.value_len("a"), Some(0));
        assert_eq!(parsed.value_len("ab"), None);
        assert!(matches!(
            Envelope::parse(&ok[..52]),
            Err(OpenError::Truncated { len: 52, .. })
        ));
        assert!(looks_sealed(&ok));
        assert!(!looks_sealed(b"{}"));
    }
}
