//! The doctor's value round trip: one value stored, read back, stat'ed and deleted, and the
//! clock skew between this host and the storage that its modification time shows.

use std::time::{Duration, Instant, SystemTime};

use cert_core::{Error, StorageExt};

use super::{Check, Status, check};
use crate::output::human;

/// Stores, loads, stats and deletes 1 KiB under a key of this run's own, then compares
/// the modification time the storage gave it with this host's clock.
pub(super) async fn round_trip(opened: &certstore::Opened, checks: &mut Vec<Check>) {
    let store = &opened.store;
    let token = cert_core::LockToken::generate();
    let key = format!("certstore-doctor/{}", token.as_str());
    let value: Vec<u8> = (0..1024u32)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let before = SystemTime::now();
    let started = Instant::now();
    let round_trip = async {
        store.store(&key, &value).await?;
        let after = SystemTime::now();
        let loaded = store.load(&key).await?;
        if loaded != value {
            return Err(Error::corrupt(
                &key,
                std::io::Error::other("read back different bytes"),
            ));
        }
        let info = store.stat(&key).await?;
        store.delete(&key).await?;
        if store.load_opt(&key).await?.is_some() {
            return Err(Error::corrupt(
                &key,
                std::io::Error::other("still present after delete"),
            ));
        }
        Ok::<_, Error>((info, after))
    }
    .await;
    match round_trip {
        Ok((info, after)) => {
            checks.push(check(
                "round trip",
                Status::Pass,
                format!(
                    "store, load, stat and delete of 1 KiB in {} ms",
                    started.elapsed().as_millis()
                ),
                "",
            ));
            checks.push(clock_skew(opened, info.modified, before, after));
        }
        Err(err) => {
            let _ = store.delete(&key).await;
            checks.push(check(
                "round trip",
                Status::Fail,
                err.to_string(),
                "check write and delete permissions of the credentials",
            ));
        }
    }
}

fn clock_skew(
    opened: &certstore::Opened,
    modified: SystemTime,
    before: SystemTime,
    after: SystemTime,
) -> Check {
    use certstore::Backend;
    let measurable = matches!(
        opened.url.backend(),
        Backend::S3 | Backend::Azure | Backend::File
    );
    if !measurable {
        return check(
            "clock skew",
            Status::Skip,
            format!(
                "the {} backend stamps values with this host's clock; its locks expire by the server's clock",
                opened.url.backend()
            ),
            "",
        );
    }
    // Servers stamp whole seconds: allow for that and the request's duration.
    let slack = after.duration_since(before).unwrap_or_default() + Duration::from_secs(2);
    let (ahead, skew) = match modified.duration_since(after) {
        Ok(ahead) => (true, ahead),
        Err(_) => (false, before.duration_since(modified).unwrap_or_default()),
    };
    let skew = skew.saturating_sub(Duration::from_secs(1));
    let direction = if ahead { "ahead of" } else { "behind" };
    if skew <= slack {
        check(
            "clock skew",
            Status::Pass,
            format!(
                "the storage's clock is within {} of this host's",
                human(slack)
            ),
            "",
        )
    } else {
        check(
            "clock skew",
            Status::Warn,
            format!(
                "the storage's clock is about {} {direction} this host's",
                human(skew)
            ),
            "keep hosts on NTP; the file backend's lock tolerance must exceed the skew",
        )
    }
}
