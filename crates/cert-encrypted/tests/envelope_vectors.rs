//! Fixed envelope vectors, the same as in `docs/storage-layout.md`.
//!
//! Each vector is checked both ways: the fixed bytes open with [`KeyRing::open`] (and
//! no single changed byte does), and the same bytes are built again from the format alone,
//! with SHA-256 for the key id and `crypto_secretbox` for the sealed part, none of this
//! crate's code. The document, the format and the code cannot drift apart unnoticed.
#![allow(clippy::unwrap_used)]

use cert_encrypted::keycheck::{CHECK_VALUE, keycheck_key};
use cert_encrypted::{
    HEADER_LEN, KEY_ID_CONTEXT, KEY_LEN_PREFIX, KeyRing, MAGIC, MIN_ENVELOPE_LEN, NONCE_LEN,
    OpenError, SecretKey, TAG_LEN, VERSION, overhead,
};
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use sha2::{Digest, Sha256};

/// The format as the document states it, written out here rather than taken from the
/// crate.
const SPEC_MAGIC: [u8; 4] = [0x89, 0x43, 0x53, 0x45];
const SPEC_VERSION: u8 = 0x01;
const SPEC_ID_CONTEXT: &[u8] = b"certstore-encrypted key id v1\0";
const SPEC_CHECK_VALUE: &[u8] = b"certstore-encrypted key check v1";

/// One vector: key, nonce, storage key and value in; key id and envelope out (hex).
struct Vector {
    key: &'static str,
    nonce: &'static str,
    storage_key: &'static str,
    value: &'static [u8],
    key_id: &'static str,
    envelope: &'static str,
}

const VECTORS: [Vector; 3] = [
    Vector {
        key: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        nonce: "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7",
        storage_key: "maintenance/last-clean.json",
        value: b"1700000000",
        key_id: "e5f34505da0c93ec",
        envelope: "8943534501e5f34505da0c93eca0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7\
                   10f5fa19e43dba314ce497a3570d3185368eda7beb0893cb194a552893871aa727effdcd\
                   55ee69511e2120bb2452d836ffda7b941e7451",
    },
    Vector {
        key: "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
        nonce: "000000000000000000000000000000000000000000000000",
        storage_key: "a",
        value: b"",
        key_id: "143ee942b4ca7f5e",
        envelope: "8943534501143ee942b4ca7f5e000000000000000000000000000000000000000000000000\
                   97d640bd6548745633b4cc134afdded9669b60",
    },
    Vector {
        key: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        nonce: "000102030405060708090a0b0c0d0e0f1011121314151617",
        storage_key: "cert-encrypted/keycheck/e5f34505da0c93ec",
        value: b"certstore-encrypted key check v1",
        key_id: "e5f34505da0c93ec",
        envelope: "8943534501e5f34505da0c93ec000102030405060708090a0b0c0d0e0f1011121314151617\
                   0b1cb5c7b862471e4dead3446ecdcc6e5ed75b2ab5be8f75d55ffd4718fb2ff37dce23a6\
                   ef4d5a8c7c8d02a133f495d4b3ee91b475d3cc31dcee83fc0812d8374c330db296f9bf3d\
                   c56f53d87e41fc90a5a09c716075a2cd62c3",
    },
];

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Vector {
    fn key(&self) -> [u8; 32] {
        unhex(self.key).try_into().unwrap()
    }

    fn envelope(&self) -> Vec<u8> {
        unhex(self.envelope)
    }

    fn ring(&self) -> KeyRing {
        KeyRing::new(SecretKey::from_bytes(self.key()))
    }
}

/// The key id from the format: the first 8 bytes of SHA-256(context || key).
fn spec_key_id(key: &[u8; 32]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(SPEC_ID_CONTEXT);
    hasher.update(key);
    hasher.finalize()[..8].to_vec()
}

/// The envelope from the format: magic, version, key id, nonce, then NaCl secretbox
/// (tag first, empty associated data) of `u16 BE key length || storage key || value`.
fn spec_envelope(v: &Vector) -> Vec<u8> {
    let key = v.key();
    let nonce = unhex(v.nonce);
    let mut message = u16::try_from(v.storage_key.len())
        .unwrap()
        .to_be_bytes()
        .to_vec();
    message.extend_from_slice(v.storage_key.as_bytes());
    message.extend_from_slice(v.value);
    let sealed = XSalsa20Poly1305::new(Key::from_slice(&key))
        .encrypt(Nonce::from_slice(&nonce), message.as_slice())
        .unwrap();
    let mut out = SPEC_MAGIC.to_vec();
    out.push(SPEC_VERSION);
    out.extend_from_slice(&spec_key_id(&key));
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

#[test]
fn the_crate_uses_the_documented_constants() {
    assert_eq!(MAGIC, SPEC_MAGIC);
    assert_eq!(VERSION, SPEC_VERSION);
    assert_eq!(KEY_ID_CONTEXT, SPEC_ID_CONTEXT);
    assert_eq!(CHECK_VALUE, SPEC_CHECK_VALUE);
    assert_eq!((NONCE_LEN, TAG_LEN, KEY_LEN_PREFIX), (24, 16, 2));
    assert_eq!((HEADER_LEN, MIN_ENVELOPE_LEN), (37, 53));
    assert_eq!(overhead("a"), 56);
}

#[test]
fn key_ids_are_derived_as_documented() {
    for v in &VECTORS {
        let key = v.key();
        assert_eq!(hex(&spec_key_id(&key)), v.key_id, "{}", v.storage_key);
        assert_eq!(
            SecretKey::from_bytes(key).id().to_string(),
            v.key_id,
            "{}",
            v.storage_key
        );
    }
    // The first key as an operator writes it (`CERTSTORE_KEY`).
    let from_text = SecretKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    assert_eq!(from_text.id().to_string(), VECTORS[0].key_id);
}

#[test]
fn fixed_envelopes_open_to_their_values() {
    for v in &VECTORS {
        let envelope = v.envelope();
        assert_eq!(envelope.len(), overhead(v.storage_key) + v.value.len());
        assert_eq!(
            v.ring().open(v.storage_key, &envelope).unwrap(),
            v.value,
            "{}",
            v.storage_key
        );
        assert_eq!(KeyRing::sealed_by(&envelope).unwrap().to_string(), v.key_id);
    }
}

#[test]
fn no_single_changed_byte_opens() {
    for v in &VECTORS {
        let ring = v.ring();
        let envelope = v.envelope();
        for at in 0..envelope.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut altered = envelope.clone();
                altered[at] ^= flip;
                assert!(
                    ring.open(v.storage_key, &altered).is_err(),
                    "{}: byte {at} ^ {flip:#04x} opened",
                    v.storage_key
                );
            }
        }
        let mut longer = envelope.clone();
        longer.push(0);
        assert!(ring.open(v.storage_key, &longer).is_err());
        assert!(
            ring.open(v.storage_key, &envelope[..envelope.len() - 1])
                .is_err()
        );
    }
}

#[test]
fn fixed_envelopes_are_bound_to_their_storage_key() {
    let v = &VECTORS[0];
    match v.ring().open("maintenance/other.json", &v.envelope()) {
        Err(OpenError::KeyMismatch { sealed_for, .. }) => {
            assert_eq!(sealed_for.as_deref(), Some(v.storage_key));
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    // Another key that happens to share the id opens nothing.
    let other = SecretKey::from_bytes([0x5a; 32]).with_id(SecretKey::from_bytes(v.key()).id());
    assert!(matches!(
        KeyRing::new(other).open(v.storage_key, &v.envelope()),
        Err(OpenError::Tampered { .. })
    ));
}

#[test]
fn envelopes_are_built_as_documented() {
    for v in &VECTORS {
        assert_eq!(
            hex(&spec_envelope(v)),
            hex(&v.envelope()),
            "{}: the envelope built from the format (left) differs from the fixed one",
            v.storage_key
        );
    }
}

#[test]
fn sealing_writes_the_documented_framing() {
    for v in &VECTORS {
        let ring = v.ring();
        let sealed = ring.seal(v.storage_key, v.value).unwrap();
        let fixed = v.envelope();
        assert_eq!(sealed.len(), fixed.len());
        // Magic, version and key id; the nonce is fresh for every seal.
        assert_eq!(sealed[..13], fixed[..13]);
        assert_ne!(sealed[13..HEADER_LEN], fixed[13..HEADER_LEN]);
        assert_eq!(ring.open(v.storage_key, &sealed).unwrap(), v.value);
    }
}

#[test]
fn the_third_vector_is_a_key_check_value() {
    let v = &VECTORS[2];
    let id = SecretKey::from_bytes(v.key()).id();
    assert_eq!(v.storage_key, keycheck_key(id));
    assert_eq!(v.value, CHECK_VALUE);
}
