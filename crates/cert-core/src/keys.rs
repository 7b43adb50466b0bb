//! Where things live in storage, and the names of cluster locks.
//!
//! ```text
//! certificates/<issuer>/<name>/<name>.bundle the record: chain, key and metadata in one value
//! certificates/<issuer>/<name>/<name>.crt    copy of the PEM chain, leaf first
//! certificates/<issuer>/<name>/<name>.key    copy of the PKCS#8 PEM private key
//! certificates/<issuer>/<name>/<name>.json   copy of the metadata (names, not-after, issuer, ...)
//! acme/<issuer>/accounts/<contact>.json      ACME account credentials
//! acme/<issuer>/orders/<name>.json           the ACME order last placed for a name
//! pending/<issuer>/<name>.key                the private key of an issuance in progress
//! challenges/http-01/<token>                 key authorization for an HTTP-01 token
//! challenges/tls-alpn-01/<name>              inputs of a TLS-ALPN-01 certificate
//! ca/<ca>/ca.bundle                          the internal CA's record (copies beside it)
//! maintenance/backoff/<name>.json            the fleet's backoff after failures for a name
//! ```
//!
//! Records made of several values are written with one commit point; the
//! `record` module (with the `engine` feature) owns their layout.
//!
//! `<name>` is [`safe_name`] of a server name, `<issuer>` is [`issuer_key`] of an issuer's
//! identity (an ACME directory URL, or a local CA's name). Locks have names of their own,
//! which never collide with storage keys.

/// The top-level prefix of certificates.
pub const CERTIFICATES: &str = "certificates";
/// The top-level prefix of ACME data.
pub const ACME: &str = "acme";
/// The top-level prefix of challenge data.
pub const CHALLENGES: &str = "challenges";
/// The top-level prefix of the internal CA.
pub const CA: &str = "ca";

/// A server name made safe as one key segment, one segment per name (no two names share
/// one, so one name's certificate can never replace another's):
///
/// - the name is trimmed, without a trailing dot, IDNs in their ASCII (punycode) form,
///   lower case;
/// - a leading `*.` (a wildcard) becomes `_.`: `*.example.com` is `_.example.com`;
/// - an IPv6 address has its `:` as `_`: `::1` is `__1`;
/// - every other byte outside `[a-z0-9.-]`, a literal `_` included, is escaped as `%` and
///   two hex digits (`_.example.com`, a name with an underscore, is `%5f.example.com`), and
///   so are a leading or trailing `.`; the empty name is `_`.
///
/// Every name the engine manages (letters, digits, `-`, `.`, a leading `*.`, IP addresses)
/// maps exactly as it did before escaping existed, so stored keys keep their names.
pub fn safe_name(server_name: &str) -> String {
    let trimmed = server_name.trim().trim_end_matches('.');
    let (wild, rest) = match trimmed.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if let Ok(v6) = rest.parse::<std::net::Ipv6Addr>()
        && !wild
    {
        return v6.to_string().replace(':', "_");
    }
    let ascii = idna::domain_to_ascii(rest).unwrap_or_else(|_| rest.to_ascii_lowercase());
    let mut out = String::with_capacity(ascii.len() + 2);
    if wild {
        out.push_str("_.");
    }
    let last = ascii.len().saturating_sub(1);
    for (i, byte) in ascii.bytes().enumerate() {
        match byte {
            b'.' if i == 0 || i == last => push_escaped(&mut out, byte),
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => out.push(char::from(byte)),
            b'A'..=b'Z' => out.push(char::from(byte.to_ascii_lowercase())),
            _ => push_escaped(&mut out, byte),
        }
    }
    if out.is_empty() { "_".to_owned() } else { out }
}

fn push_escaped(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

/// An issuer's identity made safe as one key segment: for a URL, its host and path with
/// `/` as `-` (`https://acme-v02.api.letsencrypt.org/directory` becomes
/// `acme-v02.api.letsencrypt.org-directory`); any character outside `[a-z0-9._-]` as `-`.
pub fn issuer_key(issuer: &str) -> String {
    let without_scheme = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    let mut out: String = without_scheme
        .trim_matches('/')
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    out = out.trim_matches('.').to_owned();
    if out.is_empty() { "-".to_owned() } else { out }
}

/// The key of an ACME account for a directory and contact.
pub fn acme_account(directory_url: &str, contact: &str) -> String {
    let contact = if contact.is_empty() {
        "default".to_owned()
    } else {
        safe_segment(contact)
    };
    format!(
        "{ACME}/{}/accounts/{contact}.json",
        issuer_key(directory_url)
    )
}

/// The key of the ACME order last placed for a server name at a directory, kept so that
/// an order the CA has accepted is resumed rather than placed again.
pub fn acme_order(directory_url: &str, server_name: &str) -> String {
    format!(
        "{ACME}/{}/orders/{}.json",
        issuer_key(directory_url),
        safe_name(server_name)
    )
}

/// The top-level prefix of the private keys of issuances in progress.
pub const PENDING: &str = "pending";

/// The key holding the private key of an issuance in progress for a server name at an
/// issuer: written before the issuer is asked, so that a certificate the issuer signs
/// for it after a crash or a failed save can still be used.
pub fn pending_key(issuer: &str, server_name: &str) -> String {
    format!(
        "{PENDING}/{}/{}.key",
        issuer_key(issuer),
        safe_name(server_name)
    )
}

/// The key holding the fleet's backoff state for a server name.
pub fn backoff(server_name: &str) -> String {
    format!("maintenance/backoff/{}.json", safe_name(server_name))
}

/// The key holding the key authorization of an HTTP-01 token.
pub fn http01_token(token: &str) -> String {
    format!("{CHALLENGES}/http-01/{}", safe_segment(token))
}

/// The key holding the TLS-ALPN-01 challenge inputs for a server name.
pub fn tls_alpn01(server_name: &str) -> String {
    format!("{CHALLENGES}/tls-alpn-01/{}", safe_name(server_name))
}

/// The prefix of an internal CA's files.
pub fn ca_prefix(ca_name: &str) -> String {
    format!("{CA}/{}", issuer_key(ca_name))
}

/// The lock taken while obtaining or renewing a certificate for a server name.
pub fn issue_lock(server_name: &str) -> String {
    issue_lock_of_segment(&safe_name(server_name))
}

/// The issuance lock of the record whose name segment is `segment` (a
/// [`safe_name`] already), the same lock [`issue_lock`] names for its server name.
pub fn issue_lock_of_segment(segment: &str) -> String {
    format!("issue/{segment}")
}

/// The lock taken while creating an ACME account.
pub fn account_lock(directory_url: &str) -> String {
    format!("account/{}", issuer_key(directory_url))
}

/// The lock taken while creating an internal CA.
pub fn ca_lock(ca_name: &str) -> String {
    format!("ca/{}", issuer_key(ca_name))
}

/// The lock taken by storage cleaning, cluster-wide.
pub const CLEAN_LOCK: &str = "clean";

/// Any text as one safe key segment: `[A-Za-z0-9._@+-]` kept, the rest as `_`, at most
/// 200 bytes, never empty or dot-only.
pub fn safe_segment(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '@' | '+' | '-' => c,
            _ => '_',
        })
        .take(crate::MAX_SEGMENT_LEN)
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') || out.starts_with(crate::RESERVED_PREFIX) {
        out.insert(0, '_');
        out.truncate(crate::MAX_SEGMENT_LEN);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate_key;

    #[test]
    fn names_are_normalized() {
        assert_eq!(safe_name("Example.COM."), "example.com");
        assert_eq!(safe_name("*.example.com"), "_.example.com");
        assert_eq!(safe_name("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(safe_name("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(safe_name("../../etc"), "%2e.%2f..%2fetc");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name(".."), "_", "trailing dots are the FQDN form");
        assert_eq!(safe_name("::1"), "__1");
        assert_eq!(safe_name("2001:DB8::1"), "2001_db8__1");
        assert_eq!(safe_name("10.0.0.1"), "10.0.0.1");
        assert_eq!(safe_name("_.example.com"), "%5f.example.com");
        assert_eq!(safe_name("a_b.example"), "a%5fb.example");
        assert_eq!(safe_name("100%.example"), "100%25.example");
    }

    /// No two names share a segment: a seeded search over names built from the characters
    /// that matter (wildcards, underscores, colons, dots, percent signs, case, IDNs).
    #[test]
    fn the_name_mapping_is_injective() {
        use std::collections::HashMap;
        let parts = [
            "*.", "_", "_.", ":", "::", ".", "%", "%5f", "a", "B", "1", "-", "ü", "xn--tda",
            "example", "/", " ", "@",
        ];
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            let mut name = String::new();
            for _ in 0..(state % 5 + 1) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                name.push_str(parts[(state % parts.len() as u64) as usize]);
            }
            // Names equal after normalization (case, trailing dot, IDN form) may share.
            let canonical = {
                let trimmed = name.trim().trim_end_matches('.');
                let (wild, rest) = match trimmed.strip_prefix("*.") {
                    Some(rest) => (true, rest),
                    None => (false, trimmed),
                };
                let rest = match rest.parse::<std::net::Ipv6Addr>() {
                    Ok(v6) if !wild => v6.to_string(),
                    _ => idna::domain_to_ascii(rest).unwrap_or_else(|_| rest.to_ascii_lowercase()),
                };
                format!("{}{rest}", if wild { "*." } else { "" })
            };
            let key = safe_name(&name);
            assert!(crate::validate_key(&key).is_ok() || key.len() > crate::MAX_SEGMENT_LEN);
            if let Some(other) = seen.insert(key.clone(), canonical.clone()) {
                assert_eq!(
                    other, canonical,
                    "{key:?} shared by {other:?} and {canonical:?}"
                );
            }
        }
        assert_ne!(safe_name("*.w.example"), safe_name("_.w.example"));
        assert_eq!(safe_name("*.w.example"), "_.w.example");
    }

    #[test]
    fn issuer_keys() {
        assert_eq!(
            issuer_key("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org-directory"
        );
        assert_eq!(
            issuer_key("https://127.0.0.1:14000/dir"),
            "127.0.0.1-14000-dir"
        );
        assert_eq!(issuer_key("local"), "local");
    }

    #[test]
    fn every_layout_key_is_valid() {
        let hostile = [
            "*.Example.com",
            "../x",
            "a/b",
            "\u{0}",
            ".certstore",
            "",
            ".",
        ];
        for name in hostile {
            for key in [
                crate::record::CertificateId::new("https://ca/dir", name).bundle_key(),
                crate::record::CertificateId::new("local", name).chain_key(),
                crate::record::CertificateId::new("local", name).key_key(),
                crate::record::CertificateId::new("local", name).meta_key(),
                crate::record::CertificateId::new("local", name).prefix(),
                acme_account("https://ca/dir", name),
                http01_token(name),
                tls_alpn01(name),
                ca_prefix(name),
                issue_lock(name),
                account_lock(name),
                ca_lock(name),
            ] {
                assert!(validate_key(&key).is_ok(), "{key:?} from {name:?}");
            }
        }
        assert_eq!(
            crate::record::CertificateId::new("local", "a.example").chain_key(),
            "certificates/local/a.example/a.example.crt"
        );
    }
}
