//! What envelopes and secret keys share: the key length, key ids (derived from a key or
//! given), and [`KeyError`], why a key or key id could not be made or loaded.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Length of a secret key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 8;

/// The text hashed before the key bytes to derive a key id (see [`KeyId::derive`]).
pub const KEY_ID_CONTEXT: &[u8] = b"certstore-encrypted key id v1\0";

/// The 8-byte id written in every envelope, naming the key that sealed it.
///
/// Shown as 16 lowercase hex digits. An id is public: it names a key, it does not reveal
/// it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// An id from its 8 bytes.
    pub const fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        KeyId(bytes)
    }

    /// The id's bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }

    /// The id derived from key bytes: the first 8 bytes of
    /// `SHA-256(KEY_ID_CONTEXT || key)`. The hash is one-way, so publishing it in every
    /// envelope reveals nothing about the key, and the same key always gets the same id
    /// on every node without any configuration.
    pub fn derive(key: &[u8; KEY_LEN]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(KEY_ID_CONTEXT);
        hasher.update(key);
        let digest = hasher.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    /// Parses 16 hex digits.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let bad = || KeyError::InvalidKeyId {
            text: s.chars().take(40).collect(),
        };
        if s.len() != KEY_ID_LEN * 2 || !s.is_ascii() {
            return Err(bad());
        }
        let mut id = [0u8; KEY_ID_LEN];
        for (i, out) in id.iter_mut().enumerate() {
            *out = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
        }
        Ok(KeyId(id))
    }
}

/// Why a key could not be made or loaded. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is not exactly 32 bytes.
    #[error("a key must be {KEY_LEN} bytes, got {len}")]
    WrongLength {
        /// The length found.
        len: usize,
    },
    /// The text is not base64 of 32 bytes.
    #[error("the key text is not valid base64 of {KEY_LEN} bytes")]
    InvalidBase64,
    /// The environment variable is not set or not Unicode.
    #[error("environment variable {var}: {source}")]
    Env {
        /// The variable's name.
        var: String,
        /// What went wrong.
        #[source]
        source: std::env::VarError,
    },
    /// The key file could not be read.
    #[error("key file {}: {source}", path.display())]
    Io {
        /// The file's path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The file holds neither base64 text of 32 bytes nor 32 raw (binary) bytes.
    #[error("key file {}: {source}", path.display())]
    File {
        /// The file's path.
        path: PathBuf,
        /// What is wrong with its content.
        #[source]
        source: Box<KeyError>,
    },
    /// The key file can be read or written by its group or by others (ssh refuses
    /// private keys in that state for the same reason).
    #[error(
        "key file {} has mode {mode:03o}: its group or others can read or change it; make it private with `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The file's path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The text is exactly 32 bytes long: a passphrase, not a key. A key is 32 random
    /// bytes written in base64 (44 characters).
    #[error(
        "the key text is {KEY_LEN} characters, which looks like a passphrase, not a key: use base64 of {KEY_LEN} random bytes (`head -c 32 /dev/urandom | base64`)"
    )]
    LooksLikePassphrase,
    /// A key id is not 16 hex digits.
    #[error("invalid key id {text:?}: expected 16 hex digits")]
    InvalidKeyId {
        /// The text given (at most 40 characters of it).
        text: String,
    },
    /// Two different keys in one ring have the same id.
    #[error("two different keys share the key id {0}")]
    DuplicateId(KeyId),
    /// The operating system's random source failed.
    #[error("the operating system random source failed: {0}")]
    Random(getrandom::Error),
}
