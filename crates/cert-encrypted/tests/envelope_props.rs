//! Envelope parsing and opening on arbitrary bytes: never a panic, never a plaintext.
#![allow(clippy::unwrap_used)]

use cert_encrypted::{Envelope, KeyRing, MAGIC, OpenError, SecretKey, VERSION};
use proptest::prelude::*;

fn ring() -> KeyRing {
    KeyRing::new(SecretKey::from_bytes([3; 32]))
        .with_previous(SecretKey::from_bytes([4; 32]))
        .unwrap()
}

/// Bytes that start like a real envelope under a key of the ring, then anything.
fn envelope_like() -> impl Strategy<Value = Vec<u8>> {
    let id = SecretKey::from_bytes([3; 32]).id();
    proptest::collection::vec(any::<u8>(), 0..200).prop_map(move |tail| {
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION);
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&tail);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let ring = ring();
        let _ = Envelope::parse(&bytes);
        prop_assert!(ring.open("some/key", &bytes).is_err());
    }

    #[test]
    fn envelope_shaped_bytes_never_open(bytes in envelope_like()) {
        let ring = ring();
        let parsed = Envelope::parse(&bytes);
        match ring.open("some/key", &bytes) {
            Ok(plain) => prop_assert!(false, "opened to {} bytes", plain.len()),
            Err(OpenError::Truncated { .. }) => prop_assert!(parsed.is_err()),
            Err(OpenError::Tampered { .. }) => prop_assert!(parsed.is_ok()),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn sealed_values_round_trip_and_resist_one_change(
        value in proptest::collection::vec(any::<u8>(), 0..512),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let ring = ring();
        let sealed = ring.seal("p/k", &value).unwrap();
        prop_assert_eq!(ring.open("p/k", &sealed).unwrap(), value);
        let mut altered = sealed.clone();
        let at = position.index(altered.len());
        altered[at] ^= flip;
        prop_assert!(ring.open("p/k", &altered).is_err());
        prop_assert!(ring.open("p/other", &sealed).is_err());
    }
}
