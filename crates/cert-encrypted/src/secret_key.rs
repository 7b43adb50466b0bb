//! [`SecretKey`]: 32 key bytes, zeroized on drop and never shown, with their id and
//! cipher.

use std::fmt;

use base64::Engine as _;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::KeyInit;
use zeroize::{Zeroize, Zeroizing};

use crate::key::{KEY_LEN, KeyError, KeyId};

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

    pub(crate) fn from_slice_unchecked(bytes: &[u8]) -> Self {
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

    fn counting() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
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
