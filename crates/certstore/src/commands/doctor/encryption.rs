//! The doctor's check of an encrypted storage: a sample of values opened, and which keys
//! sealed them.

use super::{Check, Status, check};
#[cfg(feature = "encrypted")]
use crate::commands::rekey::{SEAL_PLAINTEXT_HINT, plaintext_key};

#[cfg(feature = "encrypted")]
pub(super) async fn encryption(opened: &certstore::Opened) -> Check {
    use std::collections::BTreeMap;

    use cert_core::{Error, Storage};

    const SAMPLE: usize = 200;
    let Some(encrypted) = &opened.encrypted else {
        return check(
            "encryption",
            Status::Skip,
            "values are stored unencrypted",
            "use an encrypted+ URL to seal them",
        );
    };
    let keys = match opened.store.list("", true).await {
        Ok(keys) => keys,
        Err(err) => return check("encryption", Status::Fail, err.to_string(), ""),
    };
    let current = encrypted.ring().current_id();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    // Values that do not open with the ring, and values stored without encryption.
    let (mut unopened, mut plaintext) = (Vec::new(), Vec::new());
    let sample: Vec<&String> = keys.iter().take(SAMPLE).collect();
    for key in &sample {
        match encrypted.inner().load(key).await {
            Ok(raw) => {
                let id = cert_encrypted::KeyRing::sealed_by(&raw)
                    .map_or_else(|| "plain".to_owned(), |id| id.to_string());
                *by_key.entry(id).or_default() += 1;
            }
            Err(Error::NotFound { .. }) => continue,
            Err(err) => return check("encryption", Status::Fail, err.to_string(), ""),
        }
        match opened.store.load(key).await {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(err) if plaintext_key(&err).is_some() => plaintext.push((*key).clone()),
            Err(_) => unopened.push((*key).clone()),
        }
    }
    let ids: Vec<String> = by_key.iter().map(|(id, n)| format!("{id}: {n}")).collect();
    if sample.is_empty() {
        return check(
            "encryption",
            Status::Pass,
            "key loaded; no values stored yet",
            "",
        );
    }
    if !unopened.is_empty() || !plaintext.is_empty() {
        return unopened_values(&unopened, &plaintext, sample.len(), &ids);
    }
    let current = current.to_string();
    if by_key.keys().any(|id| *id != current) {
        return check(
            "encryption",
            Status::Warn,
            format!(
                "{} sampled values open; sealed by {}",
                sample.len(),
                ids.join(", ")
            ),
            format!("run `certstore rekey` to re-seal everything under the current key {current}"),
        );
    }
    check(
        "encryption",
        Status::Pass,
        format!(
            "{} sampled values open with the current key {current}",
            sample.len()
        ),
        "",
    )
}

/// The failure for sampled values that do not open: `unopened` need another key,
/// `plaintext` were stored without encryption and need sealing.
#[cfg(feature = "encrypted")]
fn unopened_values(
    unopened: &[String],
    plaintext: &[String],
    sampled: usize,
    ids: &[String],
) -> Check {
    let mut problems = Vec::new();
    let mut hints = Vec::new();
    if let Some(first) = unopened.first() {
        problems.push(format!(
            "{} of {sampled} sampled values do not open (first: {first})",
            unopened.len()
        ));
        hints.push(format!(
            "set {} to the key that sealed them, or add it to {} during a rotation",
            certstore::KEY_ENV,
            certstore::PREVIOUS_KEYS_ENV
        ));
    }
    if let Some(first) = plaintext.first() {
        problems.push(format!(
            "{} of {sampled} sampled values are stored without encryption (first: {first})",
            plaintext.len()
        ));
        hints.push(SEAL_PLAINTEXT_HINT.to_owned());
    }
    check(
        "encryption",
        Status::Fail,
        format!("{}; sealed by {}", problems.join("; "), ids.join(", ")),
        hints.join("; then "),
    )
}

#[cfg(not(feature = "encrypted"))]
pub(super) async fn encryption(_opened: &certstore::Opened) -> Check {
    check(
        "encryption",
        Status::Skip,
        "this build has no encryption support",
        "",
    )
}

#[cfg(all(test, feature = "encrypted"))]
mod tests {
    use super::*;

    fn sample(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn plaintext_values_get_the_seal_hint() {
        let ids = sample(&["plain: 2"]);
        let plain = unopened_values(&[], &sample(&["a", "b"]), 2, &ids);
        assert_eq!(plain.status, Status::Fail);
        assert!(
            plain
                .detail
                .contains("2 of 2 sampled values are stored without encryption (first: a)"),
            "{}",
            plain.detail
        );
        assert!(
            plain.hint.contains("certstore rekey --seal-plaintext"),
            "{}",
            plain.hint
        );
        assert!(!plain.hint.contains(certstore::KEY_ENV), "{}", plain.hint);
    }

    #[test]
    fn wrong_keys_and_plaintext_get_both_hints() {
        let ids = sample(&["plain: 1", "0011223344556677: 1"]);
        let both = unopened_values(&sample(&["sealed"]), &sample(&["plain"]), 2, &ids);
        assert!(
            both.detail
                .contains("1 of 2 sampled values do not open (first: sealed)"),
            "{}",
            both.detail
        );
        assert!(both.detail.contains("(first: plain)"), "{}", both.detail);
        let key_hint = both.hint.find(certstore::KEY_ENV).expect("the key hint");
        let seal_hint = both.hint.find("--seal-plaintext").expect("the seal hint");
        assert!(
            key_hint < seal_hint,
            "the key first, then sealing: {}",
            both.hint
        );
        let wrong = unopened_values(&sample(&["sealed"]), &[], 1, &ids);
        assert!(!wrong.hint.contains("--seal-plaintext"), "{}", wrong.hint);
    }
}
