//! Server names to key segments: the mapping never panics, always yields one valid key
//! segment for names that can be stored, and is reversible on the normalized name, so no
//! two different names ever share a segment (one certificate can never replace another's).
#![no_main]

use cert_core::keys::safe_name;
use cert_core::validate_key;
use libfuzzer_sys::fuzz_target;

/// The name as the mapping normalizes it: trimmed, without a trailing dot, a wildcard
/// kept as `*.`, IDNs in ASCII form, lower case; IPv6 addresses in their short form.
fn normalized(name: &str) -> String {
    let trimmed = name.trim().trim_end_matches('.');
    let (wild, rest) = match trimmed.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if !wild && let Ok(v6) = rest.parse::<std::net::Ipv6Addr>() {
        return v6.to_string();
    }
    let ascii = idna::domain_to_ascii(rest)
        .unwrap_or_else(|_| rest.to_ascii_lowercase())
        .to_ascii_lowercase();
    if wild { format!("*.{ascii}") } else { ascii }
}

/// The inverse of the mapping on normalized names.
fn decoded(segment: &str) -> String {
    if segment == "_" {
        return String::new();
    }
    let (prefix, body) = match segment.strip_prefix("_.") {
        Some(body) => ("*.", body),
        None => ("", segment),
    };
    if prefix.is_empty() && body.contains('_') {
        // Only an IPv6 address keeps a bare `_` (for its `:`).
        return body.replace('_', ":");
    }
    let bytes = body.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("escape is ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("escape is two hex digits"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    format!(
        "{prefix}{}",
        String::from_utf8(out).expect("escapes decode to UTF-8")
    )
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let segment = safe_name(name);
    assert!(!segment.contains('/'), "{name:?} gave {segment:?}");
    // Names too long to store are refused by the engine before any key is built.
    if segment.len() <= cert_core::MAX_SEGMENT_LEN {
        let key = format!("certificates/local/{segment}");
        validate_key(&key).expect("a mapped name is a valid key segment");
    }
    assert_eq!(
        decoded(&segment),
        normalized(name),
        "{name:?} maps to {segment:?}, which does not decode to its normalized form"
    );
});
