//! Secret keys and their ids.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::KeyInit;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::envelope::KEY_ID_LEN;

/// Length of a secret key in bytes.
pub const KEY_LEN: usize = 32;

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

/// A 32-byte secretbox key and its id.
///
/// The key bytes are zeroized when the key is dropped and never shown: `Debug` prints
/// only the id. Cloning copies the key (each copy is zeroized on drop).
#[derive(Clone)]
pub struct SecretKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: XSalsa20Poly1305,
    id: KeyId,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PartialEq for SecretKey {
    /// Compares key ids and key bytes (in constant time).
    fn eq(&self, other: &Self) -> bool {
        let diff = self
            .bytes
            .iter()
            .zip(other.bytes.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        self.id == other.id && diff == 0
    }
}

impl Eq for SecretKey {}

impl SecretKey {
    /// A key from 32 raw bytes, with the derived id ([`KeyId::derive`]). The array is
    /// zeroized after copying.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self::from_slice_unchecked(&bytes);
        bytes.zeroize();
        key
    }

    /// A key from a slice that must be exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != KEY_LEN {
            return Err(KeyError::WrongLength { len: bytes.len() });
        }
        Ok(Self::from_slice_unchecked(bytes))
    }

    fn from_slice_unchecked(bytes: &[u8]) -> Self {
        let mut owned = Zeroizing::new([0u8; KEY_LEN]);
        owned.copy_from_slice(bytes);
        let cipher = XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(&owned[..]));
        let id = KeyId::derive(&owned);
        SecretKey {
            bytes: owned,
            cipher,
            id,
        }
    }

    /// A key from base64 text (standard or URL-safe alphabet, padding optional,
    /// surrounding whitespace ignored) of exactly 32 bytes. Generate one with
    /// `head -c 32 /dev/urandom | base64`.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let mut buf = Zeroizing::new([0u8; 64]);
        let len = STANDARD_PAD_INDIFFERENT
            .decode_slice(text, &mut buf[..])
            .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode_slice(text, &mut buf[..]))
            .map_err(|_| KeyError::InvalidBase64)?;
        if len != KEY_LEN {
            return Err(KeyError::InvalidBase64);
        }
        Ok(Self::from_slice_unchecked(&buf[..KEY_LEN]))
    }

    /// A key from the base64 text in environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, KeyError> {
        let text = Zeroizing::new(std::env::var(var).map_err(|source| KeyError::Env {
            var: var.to_owned(),
            source,
        })?);
        Self::from_base64(&text)
    }

    /// A key from a file, refusing a file that its group or others may read or write
    /// ([`KeyError::TooOpen`], as ssh does for private keys; Unix only).
    ///
    /// The file holds one of two formats, told apart without guessing:
    ///
    /// - **text** (valid UTF-8 without control characters other than white space):
    ///   base64 of exactly 32 bytes, as in `CERTSTORE_KEY` (surrounding white space, such
    ///   as a trailing newline, ignored). Other text is refused; in particular 32
    ///   characters of text are refused as a passphrase
    ///   ([`KeyError::LooksLikePassphrase`]) rather than taken as key bytes;
    /// - **binary** (anything else): exactly 32 raw bytes, as written by
    ///   `head -c 32 /dev/urandom > key`. A random key that happens to read as such text
    ///   (far fewer than one in a billion) is refused: write it in base64.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::read_file(path.as_ref(), false)
    }

    /// [`from_file`](SecretKey::from_file) without the permission check, for files
    /// whose permissions the operator cannot tighten (some secret mounts) and has decided
    /// to accept.
    pub fn from_file_allowing_open_mode(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        Self::read_file(path.as_ref(), true)
    }

    fn read_file(path: &Path, allow_open_mode: bool) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        // The mode of the file opened, not of the path: it cannot be swapped in between.
        #[cfg(unix)]
        if !allow_open_mode {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(KeyError::TooOpen {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = allow_open_mode;
        let mut content = Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(&mut file, &mut content).map_err(io)?;
        Self::from_file_content(&content).map_err(|source| KeyError::File {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// The key in a key file's content (see [`from_file`](SecretKey::from_file)).
    fn from_file_content(content: &[u8]) -> Result<Self, KeyError> {
        let text = std::str::from_utf8(content)
            .ok()
            .filter(|text| !text.chars().any(|c| c.is_control() && !c.is_whitespace()));
        match text {
            Some(text) if text.trim().len() == KEY_LEN => Err(KeyError::LooksLikePassphrase),
            Some(text) => Self::from_base64(text),
            None if content.len() == KEY_LEN => Ok(Self::from_slice_unchecked(content)),
            None => Err(KeyError::WrongLength { len: content.len() }),
        }
    }

    /// A fresh random key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut bytes[..]).map_err(KeyError::Random)?;
        Ok(Self::from_slice_unchecked(&bytes[..]))
    }

    /// The same key under an explicit id instead of the derived one, for operators who
    /// prefer to name keys (for example by the date they were made). Every node must
    /// then configure the same id for the same key.
    pub fn with_id(mut self, id: KeyId) -> Self {
        self.id = id;
        self
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key as base64 text (standard alphabet, padded), for writing a generated key to
    /// a secret store. The returned string is zeroized on drop.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&self.bytes[..]))
    }

    pub(crate) fn cipher(&self) -> &XSalsa20Poly1305 {
        &self.cipher
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn counting() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn sources_agree() {
        let raw = SecretKey::from_bytes(counting());
        assert_eq!(SecretKey::from_base64(B64).unwrap(), raw);
        assert_eq!(
            SecretKey::from_base64(&format!("  {}\n", B64.trim_end_matches('='))).unwrap(),
            raw
        );
        assert_eq!(SecretKey::from_slice(&counting()).unwrap(), raw);
        assert_eq!(&*raw.to_base64(), B64);

        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text");
        std::fs::write(&text, format!("{B64}\n")).unwrap();
        private(&text);
        assert_eq!(SecretKey::from_file(&text).unwrap(), raw);
        let bin = dir.path().join("bin");
        let binary: [u8; 32] = std::array::from_fn(|i| 0x80 | i as u8);
        std::fs::write(&bin, binary).unwrap();
        private(&bin);
        assert_eq!(
            SecretKey::from_file(&bin).unwrap(),
            SecretKey::from_bytes(binary)
        );
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "short").unwrap();
        private(&bad);
        assert!(matches!(
            SecretKey::from_file(&bad),
            Err(KeyError::File { .. })
        ));
        assert!(matches!(
            SecretKey::from_file(dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
        assert!(matches!(
            SecretKey::from_env("CERT_ENCRYPTED_SURELY_UNSET_VARIABLE"),
            Err(KeyError::Env { .. })
        ));
    }

    /// Makes a test file private, as key files must be.
    fn private(path: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = path;
    }

    /// The old code took any 32-byte file as raw key bytes, so a 32-character passphrase
    /// became a key.
    #[test]
    fn a_passphrase_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        for text in [
            "correct horse battery staple 123",
            "correct horse battery staple 123\n",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(text.trim().len(), 32);
            std::fs::write(&file, text).unwrap();
            private(&file);
            let err = SecretKey::from_file(&file).unwrap_err();
            assert!(
                matches!(&err, KeyError::File { source, .. } if matches!(**source, KeyError::LooksLikePassphrase)),
                "{err:?}"
            );
            assert!(err.to_string().contains("passphrase"), "{err}");
            assert!(!err.to_string().contains(text.trim()), "{err}");
        }
        // Binary of another length, and text that is not base64, are refused too.
        std::fs::write(&file, [0xFFu8; 31]).unwrap();
        assert!(SecretKey::from_file(&file).is_err());
        std::fs::write(&file, "not a key at all, just some words here").unwrap();
        assert!(SecretKey::from_file(&file).is_err());
    }

    /// The old code read a key file whatever its permissions.
    #[cfg(unix)]
    #[test]
    fn an_open_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, format!("{B64}\n")).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = SecretKey::from_file(&file).unwrap_err();
            assert!(
                matches!(err, KeyError::TooOpen { mode: m, .. } if m == mode),
                "{mode:o}: {err:?}"
            );
            let shown = err.to_string();
            assert!(shown.contains(&format!("mode {mode:03o}")), "{shown}");
            assert!(shown.contains("chmod 600"), "{shown}");
            assert!(!shown.contains(B64), "{shown}");
            // Accepted when the caller chose to.
            assert_eq!(
                SecretKey::from_file_allowing_open_mode(&file).unwrap(),
                SecretKey::from_bytes(counting())
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(SecretKey::from_file(&file).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(
            SecretKey::from_slice(&[1; 31]),
            Err(KeyError::WrongLength { len: 31 })
        ));
        for text in ["", "not base64!", "AAEC", &format!("{B64}AAAA")] {
            assert!(
                matches!(SecretKey::from_base64(text), Err(KeyError::InvalidBase64)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn ids_are_derived_or_explicit() {
        let a = SecretKey::from_bytes(counting());
        let b = SecretKey::from_bytes([9; 32]);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), SecretKey::from_bytes(counting()).id());
        let id: KeyId = "0011223344556677".parse().unwrap();
        assert_eq!(id.to_string(), "0011223344556677");
        assert_eq!(a.clone().with_id(id).id(), id);
        assert!("xyz".parse::<KeyId>().is_err());
        assert!("00112233445566zz".parse::<KeyId>().is_err());
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let key = SecretKey::from_bytes([0xAB; 32]);
        let shown = format!("{key:?} {:#?}", key);
        assert!(shown.contains(&key.id().to_string()));
        assert!(!shown.to_lowercase().contains("ab, ab"), "{shown}");
        assert!(!shown.contains("171, 171"), "{shown}");
        assert!(!shown.contains("bytes"), "{shown}");
        assert!(!shown.contains(&*key.to_base64()), "{shown}");
    }

    #[test]
    fn random_keys_differ() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.id(), b.id());
    }
}
