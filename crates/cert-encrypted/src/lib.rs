//! [`Encrypted<S>`](Encrypted): seal every value of any certstore backend with NaCl
//! secretbox (XSalsa20-Poly1305).
//!
//! Wrap any storage `S` (`Storage`, and `Locker` for locks) and every value is sealed
//! before it reaches `S` and opened when it comes back, under a fresh random nonce each
//! time. Keys, listings, `stat`, `exists`, `delete` and locks pass through: key names are
//! not secret. The storage key a value belongs to is sealed together with it, so a value
//! copied or moved to another key fails to open.
//!
//! ```
//! use cert_core::{MemoryStorage, Storage};
//! use cert_encrypted::{Encrypted, KeyRing, SecretKey};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In production: SecretKey::from_env("CERTSTORE_KEY") or SecretKey::from_file(path).
//! let key = SecretKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let plain = MemoryStorage::new();
//! let storage = Encrypted::new(plain.clone(), KeyRing::new(key));
//!
//! storage.store("acme/account.json", b"{\"secret\":1}").await?;
//! assert_eq!(storage.load("acme/account.json").await?, b"{\"secret\":1}");
//! assert_eq!(storage.stat("acme/account.json").await?.size, 12);
//! // What the inner storage holds is an envelope, not the value.
//! let sealed = plain.load("acme/account.json").await?;
//! assert!(!sealed.windows(6).any(|w| w == b"secret"));
//!
//! // Rotation: a new current key, the old one kept for opening, then re-seal everything.
//! let new_key = SecretKey::generate()?;
//! let old_key = SecretKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")?;
//! let rotated = Encrypted::new(plain.clone(), KeyRing::new(new_key).with_previous(old_key)?);
//! let report = rotated.rekey("", |p| println!("{}/{}", p.done, p.total)).await?;
//! assert_eq!(report.resealed, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Keys
//!
//! A [`SecretKey`] is 32 bytes, made from raw bytes, base64 text, an environment
//! variable, a file or the OS random source. A key file holds base64 text of 32 bytes,
//! or 32 raw binary bytes; text of 32 characters is refused as a passphrase, and a file
//! its group or others may read or write is refused as ssh refuses such private keys
//! (see [`SecretKey::from_file`]). Key bytes are
//! zeroized on drop and never appear in `Debug` output or error messages.
//!
//! Each key has an 8-byte [`KeyId`], written in every envelope so the right key can be
//! picked without trial decryption. By default the id is derived from the key: the first
//! 8 bytes of `SHA-256("certstore-encrypted key id v1\0" || key)` ([`KEY_ID_CONTEXT`]).
//! Every node computes the same id from the same key with no configuration, and the
//! one-way hash reveals nothing about the key. An explicit id can be given instead
//! ([`SecretKey::with_id`]); every node must then use the same id for the same key.
//!
//! A [`KeyRing`] holds one current key, which seals, and any number of previous keys,
//! which still open. To rotate: put the new key first and the old one as previous on every
//! node, run [`Encrypted::rekey`] once (it holds a cluster lock, skips what is already
//! done and can be re-run after an interruption), then remove the old key.
//!
//! A storage remembers which keys sealed it ([`keycheck`]): before its first write, an
//! [`Encrypted`] storage refuses a ring that cannot open what is stored, so a node given
//! the wrong key fails with a clear error instead of sealing values no other node can
//! open.
//!
//! # Envelope format, version 1
//!
//! Every stored value is exactly these bytes (offsets in bytes; `K` is the length of the
//! storage key in bytes, UTF-8; `V` the length of the value):
//!
//! | offset        | length | content                                                   |
//! |---------------|--------|-----------------------------------------------------------|
//! | 0             | 4      | magic `0x89 0x43 0x53 0x45` (`0x89`, then ASCII `CSE`)    |
//! | 4             | 1      | version, `0x01`                                           |
//! | 5             | 8      | key id of the sealing key                                 |
//! | 13            | 24     | nonce, fresh from the OS random source for every store   |
//! | 37            | 16     | Poly1305 tag                                              |
//! | 53            | 2      | encrypted: `K` as a big-endian unsigned 16-bit integer   |
//! | 55            | K      | encrypted: the storage key                                |
//! | 55 + K        | V      | encrypted: the value                                      |
//!
//! Bytes 37 to the end are exactly the output of NaCl/libsodium
//! `crypto_secretbox_easy(message, nonce, key)` where `message = K (u16 BE) || storage
//! key || value`: the tag followed by the XSalsa20 ciphertext. To read an envelope in
//! another language: check the magic and version, find the key by the id, call
//! `crypto_secretbox_open_easy(bytes[37..], bytes[13..37], key)`, check that the
//! message's first `2 + K` bytes are the expected storage key, and take the rest as the
//! value. The header (magic, version, id, nonce) is not authenticated on its own, but
//! altering it cannot go unnoticed: a changed id selects an unknown or wrong key, a
//! changed nonce or any changed byte after it fails the tag.
//!
//! The overhead is `55 + K` bytes ([`overhead`]), fixed for a given key, so
//! [`Storage::stat`](cert_core::Storage::stat) reports the plaintext size without
//! decrypting, and a value is refused with [`TooLarge`](cert_core::Error::TooLarge)
//! (naming the key) when value plus overhead would exceed
//! [`MAX_VALUE_LEN`](cert_core::MAX_VALUE_LEN).
//!
//! # Errors
//!
//! A value that does not open is [`cert_core::Error::Corrupt`] with the storage key, and
//! its `source` is an [`OpenError`] (downcast it): [`OpenError::NotAnEnvelope`],
//! [`OpenError::UnsupportedVersion`], [`OpenError::Truncated`],
//! [`OpenError::UnknownKeyId`], [`OpenError::Tampered`] (altered, or wrong key) or
//! [`OpenError::KeyMismatch`] (sealed for another storage key). Nothing panics and no
//! wrong plaintext is ever returned.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod encrypted;
mod envelope;
mod key;
mod key_source;
pub mod keycheck;
mod rekey;
mod ring;
mod secret_key;

pub use cert_core::Layer;
pub use encrypted::{Encrypted, EncryptedLayer};
pub use envelope::{
    Envelope, HEADER_LEN, KEY_LEN_PREFIX, MAGIC, MIN_ENVELOPE_LEN, NONCE_LEN, OpenError, TAG_LEN,
    VERSION, overhead,
};
pub use key::{KEY_ID_CONTEXT, KEY_ID_LEN, KEY_LEN, KeyError, KeyId};
pub use keycheck::{KEYCHECK_PREFIX, KeyCheckError};
pub use rekey::{REKEY_LOCK, RekeyProgress};
pub use ring::KeyRing;
pub use secret_key::SecretKey;
