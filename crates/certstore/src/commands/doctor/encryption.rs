//! The doctor's check of an encrypted storage: a sample of values opened, and which keys
//! sealed them.

use super::{Check, Status, check};

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
    let mut unopened = Vec::new();
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
    if !unopened.is_empty() {
        return check(
            "encryption",
            Status::Fail,
            format!(
                "{} of {} sampled values do not open (first: {}); sealed by {}",
                unopened.len(),
                sample.len(),
                unopened[0],
                ids.join(", ")
            ),
            format!(
                "set {} to the key that sealed them, or add it to {} during a rotation",
                certstore::KEY_ENV,
                certstore::PREVIOUS_KEYS_ENV
            ),
        );
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

#[cfg(not(feature = "encrypted"))]
pub(super) async fn encryption(_opened: &certstore::Opened) -> Check {
    check(
        "encryption",
        Status::Skip,
        "this build has no encryption support",
        "",
    )
}
