//! The storage key validator: never panics, and what it accepts follows the written rules
//! (no traversal, no empty or dot segment, no leading or trailing `/`, bounded length, no
//! control characters or backslash, no reserved segment).
#![no_main]

use cert_core::{MAX_KEY_LEN, MAX_SEGMENT_LEN, RESERVED_PREFIX, validate_key, validate_prefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = std::str::from_utf8(data) else {
        return;
    };
    let accepted = validate_key(key).is_ok();
    assert_eq!(
        validate_prefix(key).is_ok(),
        key.is_empty() || accepted,
        "a prefix is the root or a valid key"
    );
    if !accepted {
        return;
    }
    assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
    assert!(!key.starts_with('/') && !key.ends_with('/'));
    for segment in key.split('/') {
        assert!(!segment.is_empty() && segment != "." && segment != "..");
        assert!(segment.len() <= MAX_SEGMENT_LEN);
        assert!(!segment.starts_with(RESERVED_PREFIX));
    }
    assert!(
        !key.chars().any(|c| c.is_control() || c == '\\'),
        "{key:?} holds a control character or backslash"
    );
});
