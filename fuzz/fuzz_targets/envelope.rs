//! The `Encrypted<S>` envelope: opening arbitrary bytes never panics and never yields a
//! value; a sealed value opens to exactly itself under its own storage key only, and any
//! single changed byte makes it fail to open.
#![no_main]

use arbitrary::Arbitrary;
use cert_encrypted::{Envelope, KeyRing, SecretKey};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// Bytes opened as if read from storage.
    stored: &'a [u8],
    /// A value sealed, opened, and tampered with.
    value: &'a [u8],
    /// Which byte of the envelope to change, and how.
    flip_at: usize,
    flip_with: u8,
}

fuzz_target!(|input: Input<'_>| {
    let ring = KeyRing::new(SecretKey::from_bytes([7; 32]));
    let key = "certificates/local/example.com/example.com.key";

    // Whatever storage holds, opening it is an error or a value that was really sealed
    // by this ring: random bytes never authenticate.
    let _ = Envelope::parse(input.stored);
    assert!(
        ring.open(key, input.stored).is_err(),
        "unsealed bytes opened"
    );

    let Ok(sealed) = ring.seal(key, input.value) else {
        return;
    };
    let opened = ring.open(key, &sealed).expect("a fresh envelope opens");
    assert_eq!(opened, input.value);
    assert!(
        ring.open("certificates/local/other/other.key", &sealed)
            .is_err(),
        "an envelope opened under another storage key"
    );

    let mut tampered = sealed.clone();
    let at = input.flip_at % tampered.len();
    let flip = input.flip_with.max(1);
    tampered[at] ^= flip;
    assert!(
        ring.open(key, &tampered).is_err(),
        "a changed byte still opened"
    );
});
