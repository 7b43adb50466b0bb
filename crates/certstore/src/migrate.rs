//! [`migrate`]: copy every key of one storage to another, verified and resumable.

use std::sync::Arc;
use std::time::Duration;

use cert_core::record;
use cert_core::{Error, LockGuard, LockOptions, Locker, Result, Store, keys, try_lock};
use futures::StreamExt;
use serde::Serialize;

/// The lock a migration holds on its source, so two migrations of one storage never run
/// at once.
pub const MIGRATE_LOCK: &str = "certstore/migrate";

/// How [`migrate`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// Copy only the keys below this prefix (`""`, the default, copies everything).
    pub prefix: String,
    /// Compare only: report what would be copied, write nothing, take no lock.
    pub dry_run: bool,
    /// Keys copied at once. Default 8.
    pub concurrency: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            prefix: String::new(),
            dry_run: false,
            concurrency: 8,
        }
    }
}

impl MigrateOptions {
    /// Copies only below `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Compares without writing.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Copies this many keys at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }
}

/// Where a migration stands; passed to the progress callback and returned at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Keys found below the prefix in the source.
    pub total: usize,
    /// Keys handled so far.
    pub done: usize,
    /// Keys written to the destination and read back identical (in a dry run: keys that
    /// would be written).
    pub copied: usize,
    /// Keys the destination already held with identical bytes.
    pub skipped: usize,
    /// Keys deleted from the source while the migration ran.
    pub vanished: usize,
    /// Keys that could not be copied, with the reason.
    pub failed: Vec<(String, String)>,
}

enum Outcome {
    Copied,
    Skipped,
    Vanished,
}

/// Copies every key below `options.prefix` from `from` to `to`.
///
/// - Records' bundles ([`record::is_bundle_key`]) are copied first, every other value
///   after them, so at every moment of a copy each record on the destination is whole:
///   a bundle with copies not yet copied is a complete record (its copies are only
///   copies), and no copy arrives without its bundle.
/// - Each value is written, then read back from `to` and compared byte for byte; a
///   mismatch is a failure of that key.
/// - Keys `to` already holds with identical bytes are skipped without writing, so an
///   interrupted migration resumes where it stopped when run again.
/// - Unless it is a dry run, it holds the lock [`MIGRATE_LOCK`] and the engine's
///   cleaning lock ([`keys::CLEAN_LOCK`]) on the source for its whole run, so a second
///   migration refuses to start and no engine cleans (deletes) certificates half way;
///   it stops with [`Error::LockLost`] if a lease is lost.
/// - A key that fails does not stop the others: failures are listed in the report.
///   Listing the source, or losing a lock, stops the run with an error.
///
/// Locks themselves are not copied: they belong to the processes holding them.
pub async fn migrate(
    from: Arc<dyn Store>,
    to: Arc<dyn Store>,
    options: &MigrateOptions,
    mut progress: impl FnMut(&MigrateReport) + Send,
) -> Result<MigrateReport> {
    cert_core::validate_prefix(&options.prefix)?;
    let guards = if options.dry_run {
        Vec::new()
    } else {
        take_locks(&from).await?
    };
    let result = run(&from, &to, options, &guards, &mut progress).await;
    for guard in guards {
        let _ = guard.release().await;
    }
    result
}

async fn take_locks(from: &Arc<dyn Store>) -> Result<Vec<LockGuard>> {
    let locker: Arc<dyn Locker> = from.clone();
    let options = LockOptions::default().with_ttl(Duration::from_secs(30));
    let Some(migrate) = try_lock(Arc::clone(&locker), MIGRATE_LOCK, &options).await? else {
        return Err(Error::Conflict {
            key: MIGRATE_LOCK.to_owned(),
            reason: "another migration of this storage is running (it holds the lock)".into(),
        });
    };
    let clean = cert_core::lock(
        locker,
        keys::CLEAN_LOCK,
        &options.clone().with_timeout(Duration::from_secs(60)),
    )
    .await;
    match clean {
        Ok(clean) => Ok(vec![migrate, clean]),
        Err(err) => {
            let _ = migrate.release().await;
            Err(err)
        }
    }
}

async fn run(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    options: &MigrateOptions,
    guards: &[LockGuard],
    progress: &mut (impl FnMut(&MigrateReport) + Send),
) -> Result<MigrateReport> {
    let keys = from.list(&options.prefix, true).await?;
    let mut report = MigrateReport {
        total: keys.len(),
        ..MigrateReport::default()
    };
    progress(&report);
    let dry_run = options.dry_run;
    // Bundles (the records' commit points) are all copied before any other value, so the
    // destination never holds a record's copies without the bundle that commits them.
    let (bundles, rest): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|key| record::is_bundle_key(key));
    for phase in [bundles, rest] {
        let mut copies = futures::stream::iter(phase)
            .map(|key| async move {
                let outcome = copy_one(from.as_ref(), to.as_ref(), &key, dry_run).await;
                (key, outcome)
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some((key, outcome)) = copies.next().await {
            if let Some(lost) = guards.iter().find(|guard| guard.is_lost()) {
                return Err(Error::LockLost { name: lost.name() });
            }
            match outcome {
                Ok(Outcome::Copied) => report.copied += 1,
                Ok(Outcome::Skipped) => report.skipped += 1,
                Ok(Outcome::Vanished) => report.vanished += 1,
                Err(err) => report.failed.push((key, err.to_string())),
            }
            report.done += 1;
            progress(&report);
        }
    }
    report.failed.sort();
    Ok(report)
}

async fn copy_one(from: &dyn Store, to: &dyn Store, key: &str, dry_run: bool) -> Result<Outcome> {
    let value = match from.load(key).await {
        Ok(value) => value,
        Err(Error::NotFound { .. }) => return Ok(Outcome::Vanished),
        Err(err) => return Err(err),
    };
    match to.load(key).await {
        Ok(existing) if existing == value => return Ok(Outcome::Skipped),
        Ok(_) | Err(Error::NotFound { .. }) => {}
        Err(err) => return Err(err),
    }
    if dry_run {
        return Ok(Outcome::Copied);
    }
    to.store(key, &value).await?;
    let back = to.load(key).await?;
    if back != value {
        return Err(Error::corrupt(
            key,
            std::io::Error::other(format!(
                "read back {} bytes that differ from the {} bytes written",
                back.len(),
                value.len()
            )),
        ));
    }
    Ok(Outcome::Copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cert_core::{MemoryStorage, Storage};

    #[tokio::test]
    async fn copies_verifies_and_resumes() {
        let from = MemoryStorage::new();
        let to = MemoryStorage::new();
        for n in 0..20 {
            from.store(&format!("k/{n:02}"), &[n; 3]).await.unwrap();
        }
        let (src, dst): (Arc<dyn Store>, Arc<dyn Store>) =
            (Arc::new(from.clone()), Arc::new(to.clone()));

        let dry = migrate(
            src.clone(),
            dst.clone(),
            &MigrateOptions::default().with_dry_run(true),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!((dry.total, dry.copied, dry.skipped), (20, 20, 0));
        assert!(to.is_empty(), "a dry run writes nothing");

        to.store("k/03", &[3; 3]).await.unwrap();
        to.store("k/04", b"stale").await.unwrap();
        let mut calls = 0;
        let report = migrate(src.clone(), dst.clone(), &MigrateOptions::default(), |_| {
            calls += 1
        })
        .await
        .unwrap();
        assert_eq!((report.copied, report.skipped), (19, 1));
        assert!(report.failed.is_empty());
        assert_eq!(calls, 21);
        assert_eq!(to.load("k/04").await.unwrap(), vec![4; 3]);

        let again = migrate(src.clone(), dst.clone(), &MigrateOptions::default(), |_| {})
            .await
            .unwrap();
        assert_eq!((again.copied, again.skipped), (0, 20));
    }

    #[tokio::test]
    async fn bundles_are_written_before_any_other_value() {
        let from = MemoryStorage::new();
        for name in ["a.example", "b.example"] {
            let stored = cert_core::testing::self_signed_certificate(
                &[name],
                "local",
                Duration::from_secs(86_400),
            )
            .unwrap();
            record::save_certificate(&from, name, &stored, None)
                .await
                .unwrap();
        }
        from.store("acme/account.json", b"{}").await.unwrap();
        let to = cert_core::testing::FaultyStorage::new(MemoryStorage::new());
        let report = migrate(
            Arc::new(from),
            Arc::new(to.clone()),
            &MigrateOptions::default().with_concurrency(4),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(report.copied, 9);
        let written = to.written_keys();
        assert_eq!(written.len(), 9);
        assert!(
            written[..2].iter().all(|key| record::is_bundle_key(key)),
            "{written:?}"
        );
        assert!(!written[2..].iter().any(|key| record::is_bundle_key(key)));
    }

    #[tokio::test]
    async fn a_second_migration_is_refused_while_one_holds_the_lock() {
        let from = MemoryStorage::new();
        from.store("a", b"1").await.unwrap();
        let src: Arc<dyn Store> = Arc::new(from.clone());
        let held = try_lock(src.clone(), MIGRATE_LOCK, &LockOptions::default())
            .await
            .unwrap()
            .unwrap();
        let err = migrate(
            src.clone(),
            Arc::new(MemoryStorage::new()),
            &MigrateOptions::default(),
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        held.release().await.unwrap();
    }
}
