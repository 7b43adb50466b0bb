//! PEM bundles (a chain and its private key) and the checks a bundle passes before it is
//! served.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use cert_core::certificate::{certified_key_from_pem, leaf_info, parse_chain, unix_to_system};
use cert_core::rustls::sign::CertifiedKey;
use cert_core::{CertificateError, MAX_SEGMENT_LEN};
use zeroize::Zeroizing;

/// A certificate chain (leaf first) and its private key, in PEM.
///
/// `Debug` never shows the key, and the key's text is zeroized when dropped.
#[derive(Clone)]
pub struct PemBundle {
    chain_pem: String,
    key_pem: Zeroizing<String>,
}

impl fmt::Debug for PemBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemBundle")
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl PemBundle {
    /// A bundle from a PEM chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn new(chain_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        PemBundle {
            chain_pem: chain_pem.into(),
            key_pem: Zeroizing::new(key_pem.into()),
        }
    }

    /// The PEM chain.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The PEM private key.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Chain then key in one PEM text, the form a bundle is stored in.
    pub fn to_combined(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(
            self.chain_pem.len() + self.key_pem.len() + 1,
        ));
        out.push_str(&self.chain_pem);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&self.key_pem);
        out
    }

    /// Checks the bundle and builds what the handshake serves.
    pub fn validate(&self) -> Result<Validated, CertificateError> {
        validate_pem(&self.chain_pem, &self.key_pem)
    }
}

/// A bundle that passed its checks: the key matches the leaf.
#[derive(Clone)]
#[non_exhaustive]
pub struct Validated {
    /// What the handshake serves.
    pub certified: Arc<CertifiedKey>,
    /// The names the leaf covers (DNS names, wildcards and IP addresses).
    pub names: Vec<String>,
    /// The leaf's end of validity.
    pub not_after: SystemTime,
}

impl fmt::Debug for Validated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validated")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Validated {
    /// Whether the leaf's names cover `server_name`: the same name, or a wildcard
    /// `*.parent` for a name one label below `parent`.
    pub fn covers(&self, server_name: &str) -> bool {
        covers(&self.names, server_name)
    }
}

/// Checks a chain and key given as PEM (both may be one combined text): at least one
/// certificate, a private key that matches the leaf.
pub(crate) fn validate_pem(chain_pem: &str, key_pem: &str) -> Result<Validated, CertificateError> {
    let certified = certified_key_from_pem(chain_pem, key_pem)?;
    let chain = parse_chain(chain_pem)?;
    let leaf = leaf_info(&chain[0])?;
    Ok(Validated {
        certified,
        names: leaf.names,
        not_after: unix_to_system(leaf.not_after),
    })
}

/// Whether `names` (from a leaf) cover `server_name`.
pub(crate) fn covers(names: &[String], server_name: &str) -> bool {
    let name = server_name.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|covered| {
        let covered = covered.trim_end_matches('.');
        if covered.eq_ignore_ascii_case(&name) {
            return true;
        }
        match (covered.strip_prefix("*."), name.split_once('.')) {
            (Some(parent), Some((label, rest))) => {
                !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(parent)
            }
            _ => false,
        }
    })
}

/// A server or host name in the form entries are kept under: lower case, no trailing dot.
/// Refuses what no host name (or IP address) looks like.
pub(crate) fn normalize_name(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.');
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63.min(MAX_SEGMENT_LEN)
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*' | b':'))
        });
    valid.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["a.example".to_owned(), "*.b.example".to_owned()];
        assert!(covers(&names, "a.example"));
        assert!(covers(&names, "A.Example."));
        assert!(covers(&names, "x.b.example"));
        assert!(!covers(&names, "b.example"));
        assert!(!covers(&names, "y.x.b.example"));
        assert!(!covers(&names, "c.example"));
    }

    #[test]
    fn names_are_normalized_or_refused() {
        assert_eq!(
            normalize_name("WWW.Example.COM.").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(normalize_name("10.0.0.1").as_deref(), Some("10.0.0.1"));
        for bad in ["", ".", "a..b", "a/b", "a b", "a\nb", &"x".repeat(300)] {
            assert_eq!(normalize_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let bundle = PemBundle::new("CHAIN", "-----BEGIN PRIVATE KEY-----secret");
        let shown = format!("{bundle:?}");
        assert!(!shown.contains("secret"));
        assert!(shown.contains("redacted"));
        assert!(bundle.to_combined().starts_with("CHAIN\n-----BEGIN"));
    }
}
