//! Shared access signatures signed with an account key, as the Azure Storage documentation
//! specifies ("Create a service SAS" and "Create an account SAS", version 2020-12-06 and
//! later string-to-sign layouts).

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The service version the signatures name (`sv`).
pub(crate) const SAS_VERSION: &str = "2022-11-02";

/// An account name and its decoded key. `Debug` never shows the key.
#[derive(Clone)]
pub(crate) struct AccountKey {
    pub(crate) account: String,
    key: Vec<u8>,
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountKey")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why an account key was refused.
#[derive(Debug, thiserror::Error)]
#[error("the account key for {account} is not valid base64")]
pub(crate) struct BadKey {
    account: String,
}

impl AccountKey {
    /// Decodes the base64 key the portal shows.
    pub(crate) fn new(account: &str, key_base64: &str) -> Result<Self, BadKey> {
        let key = STANDARD
            .decode(key_base64.trim())
            .ok()
            .filter(|key| !key.is_empty())
            .ok_or_else(|| BadKey {
                account: account.to_owned(),
            })?;
        Ok(AccountKey {
            account: account.to_owned(),
            key,
        })
    }

    fn sign(&self, string_to_sign: &str) -> String {
        // HMAC accepts keys of any length, so this never fails.
        match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(string_to_sign.as_bytes());
                STANDARD.encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        }
    }

    /// A service SAS for one container (`sr=c`) with read, add, create, write, delete and
    /// list permissions, valid from a little before now until `lifetime` from now. Returns
    /// the query string (without `?`).
    pub(crate) fn container_sas(
        &self,
        container: &str,
        https_only: bool,
        now: SystemTime,
        lifetime: Duration,
    ) -> String {
        let (start, expiry) = window(now, lifetime);
        let permissions = "racwdl";
        let protocol = if https_only { "https" } else { "https,http" };
        let resource = format!("/blob/{}/{container}", self.account);
        // permissions, start, expiry, canonicalized resource, identifier, IP, protocol,
        // version, resource, snapshot time, encryption scope, rscc, rscd, rsce, rscl, rsct.
        let string_to_sign = [
            permissions,
            &start,
            &expiry,
            &resource,
            "",
            "",
            protocol,
            SAS_VERSION,
            "c",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .join("\n");
        let sig = self.sign(&string_to_sign);
        query(&[
            ("sv", SAS_VERSION),
            ("sr", "c"),
            ("sp", permissions),
            ("st", &start),
            ("se", &expiry),
            ("spr", protocol),
            ("sig", &sig),
        ])
    }

    /// An account SAS for the blob service (containers and objects), used only to create
    /// the container. Returns the query string (without `?`).
    pub(crate) fn account_sas(
        &self,
        https_only: bool,
        now: SystemTime,
        lifetime: Duration,
    ) -> String {
        let (start, expiry) = window(now, lifetime);
        let permissions = "rwdlac";
        let protocol = if https_only { "https" } else { "https,http" };
        // account, permissions, services, resource types, start, expiry, IP, protocol,
        // version, encryption scope, and a final newline.
        let string_to_sign = format!(
            "{}\n{permissions}\nb\nsco\n{start}\n{expiry}\n\n{protocol}\n{SAS_VERSION}\n\n",
            self.account
        );
        let sig = self.sign(&string_to_sign);
        query(&[
            ("sv", SAS_VERSION),
            ("ss", "b"),
            ("srt", "sco"),
            ("sp", permissions),
            ("st", &start),
            ("se", &expiry),
            ("spr", protocol),
            ("sig", &sig),
        ])
    }
}

/// The signature's start (15 minutes back, for clock skew) and expiry, in the ISO 8601
/// form the service expects (`2026-01-02T03:04:05Z`).
fn window(now: SystemTime, lifetime: Duration) -> (String, String) {
    let skew = Duration::from_secs(15 * 60);
    let start = now.checked_sub(skew).unwrap_or(now);
    let expiry = now.checked_add(lifetime).unwrap_or(now);
    (iso(start), iso(expiry))
}

fn iso(at: SystemTime) -> String {
    let at = OffsetDateTime::from(at);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Replaces the value of every `sig=` parameter in `text` so signatures never reach logs
/// or error messages.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sig=") {
        out.push_str(&rest[..at + 4]);
        out.push_str("REDACTED");
        let after = &rest[at + 4..];
        let end = after
            .find(|c: char| c == '&' || c == ')' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn container_sas_has_the_documented_fields_and_a_stable_signature() {
        let key = AccountKey::new("acct", &STANDARD.encode(b"secret key")).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let sas = key.container_sas("box", true, at, Duration::from_secs(3600));
        assert!(
            sas.starts_with("sv=2022-11-02&sr=c&sp=racwdl&st=2023-11-14T21%3A58%3A20Z"),
            "{sas}"
        );
        assert!(sas.contains("se=2023-11-14T23%3A13%3A20Z"), "{sas}");
        assert!(sas.contains("spr=https&sig="));
        // The same inputs sign the same; another key signs differently.
        assert_eq!(
            sas,
            key.container_sas("box", true, at, Duration::from_secs(3600))
        );
        let other = AccountKey::new("acct", &STANDARD.encode(b"other key")).unwrap();
        assert_ne!(
            sas,
            other.container_sas("box", true, at, Duration::from_secs(3600))
        );
    }

    #[test]
    fn hmac_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = AccountKey::new("a", &STANDARD.encode(b"Jefe")).unwrap();
        let sig = key.sign("what do ya want for nothing?");
        let hex: String = STANDARD
            .decode(sig)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let err = AccountKey::new("acct", "not base64 !!").unwrap_err();
        assert!(!err.to_string().contains("!!"));
        assert!(AccountKey::new("acct", "").is_err());
        let key = AccountKey::new("acct", &STANDARD.encode(b"k")).unwrap();
        assert!(!format!("{key:?}").contains(&STANDARD.encode(b"k")));
    }

    #[test]
    fn redact_hides_signatures() {
        let text = "error sending request for url (http://h/c/b?sv=1&sig=abc%2Bdef&se=2): boom";
        let out = redact(text);
        assert_eq!(
            out,
            "error sending request for url (http://h/c/b?sv=1&sig=REDACTED&se=2): boom"
        );
        assert_eq!(redact("sig=x"), "sig=REDACTED");
        assert_eq!(redact("nothing"), "nothing");
    }
}
