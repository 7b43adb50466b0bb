//! [`migrate`]: copy every key of one storage to another, verified and resumable; and
//! [`StorageIdentity`]: whether two storage URLs name the same keys.

mod identity;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use cert_core::record;
use cert_core::{Error, LockGuard, LockOptions, Locker, Result, Store, keys, try_lock};
use futures::StreamExt;
use serde::Serialize;

pub use identity::{StorageIdentity, same_storage};

/// The lock a migration holds on its source, so two migrations of one storage never run
/// at once.
pub const MIGRATE_LOCK: &str = "certstore/migrate";

/// How long [`migrate`] waits for the cleaning lock before it tells the progress callback
/// what it waits for: long enough that a lock taken and released at once goes unnoticed.
const WAIT_NOTICE: Duration = Duration::from_secs(1);

/// How long [`migrate`] waits for the cleaning lock: longer than its default time to
/// live, so a lock left by a process that died expires meanwhile.
pub const CLEAN_WAIT: Duration = Duration::from_secs(60);

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
    /// Before any copying: the lock on the source the run is waiting for (another process
    /// holds it), reported once after a second of waiting. `None` otherwise.
    pub waiting_for: Option<String>,
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
///   it stops with [`Error::LockLost`] if a lease is lost. While it waits for the cleaning
///   lock (up to a minute: a `clean` running, or a lock left by a process that died until
///   it expires), `progress` gets a report naming it in
///   [`waiting_for`](MigrateReport::waiting_for), once, after a second.
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
        take_locks(&from, &mut progress).await?
    };
    let result = run(&from, &to, options, &guards, &mut progress).await;
    for guard in guards {
        let _ = guard.release().await;
    }
    result
}

async fn take_locks(
    from: &Arc<dyn Store>,
    progress: &mut (impl FnMut(&MigrateReport) + Send),
) -> Result<Vec<LockGuard>> {
    let locker: Arc<dyn Locker> = from.clone();
    let options = LockOptions::default().with_ttl(Duration::from_secs(30));
    let Some(migrate) = try_lock(Arc::clone(&locker), MIGRATE_LOCK, &options).await? else {
        return Err(Error::Conflict {
            key: MIGRATE_LOCK.to_owned(),
            reason: "another migration of this storage is running (it holds the lock)".into(),
        });
    };
    let clean_options = options.clone().with_timeout(CLEAN_WAIT);
    let waiting = cert_core::lock(locker, keys::CLEAN_LOCK, &clean_options);
    tokio::pin!(waiting);
    // A silent wait of up to a minute looks like a hang: say what is awaited, once.
    let clean = tokio::select! {
        clean = &mut waiting => clean,
        () = tokio::time::sleep(WAIT_NOTICE) => {
            progress(&MigrateReport {
                waiting_for: Some(keys::CLEAN_LOCK.to_owned()),
                ..MigrateReport::default()
            });
            waiting.await
        }
    };
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
