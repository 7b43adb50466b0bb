//! What sealing must guarantee: nothing altered, truncated, moved or sealed by another
//! key ever opens, the inner store never holds plaintext, and re-keying leaves no value
//! under an old key. This file holds the helpers the test modules share.
#![allow(clippy::unwrap_used)]

use cert_core::Error;
use cert_encrypted::{OpenError, SecretKey};

mod opening;
mod rekey;
mod secrecy;
mod sizes;

const MARKER: &[u8] = b"-----BEGIN PRIVATE KEY----- MARKER-7f3a9c";

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn open_error(err: &Error) -> &OpenError {
    match err {
        Error::Corrupt { source, .. } => source
            .downcast_ref::<OpenError>()
            .unwrap_or_else(|| panic!("source is not an OpenError: {err:?}")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn corrupt_key(err: &Error) -> &str {
    match err {
        Error::Corrupt { key, .. } => key,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
