//! `certstore clean`: certificates expired past a grace period removed, each under its
//! name's issuance lock, and expired locks with them.

use std::sync::Arc;
use std::time::Duration;

use cert_core::record::{self, Expiry};
use cert_core::{LockOptions, Locker, keys, try_lock};
use certstore::inventory;

use crate::output::{CliError, CliResult, now_unix, parse_duration, printable};
use crate::{Global, StorageArg};

/// Arguments of `certstore clean`.
#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Remove certificates expired for longer than this (`30d`, `12h`, ...).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    grace: Duration,
    /// Only print what would be removed.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(global: &Global, args: CleanArgs) -> CliResult {
    let opened = global.open(&args.storage.storage).await?;
    let store = &opened.store;
    let guard = if args.dry_run {
        None
    } else {
        let locker: Arc<dyn Locker> = store.clone();
        match try_lock(locker, keys::CLEAN_LOCK, &LockOptions::default()).await {
            Ok(Some(guard)) => Some(guard),
            Ok(None) => {
                return Err(CliError::failed(
                    "another process is cleaning this storage (it holds the clean lock); try later",
                ));
            }
            Err(err) => return Err(CliError::storage("cannot take the clean lock", &err)),
        }
    };
    let result = clean_locked(&opened, &args).await;
    if let Some(guard) = guard {
        let _ = guard.release().await;
    }
    result
}

async fn clean_locked(opened: &certstore::Opened, args: &CleanArgs) -> CliResult {
    let store = &opened.store;
    let cutoff = now_unix() - i64::try_from(args.grace.as_secs()).unwrap_or(i64::MAX);
    let entries = inventory::scan(store.as_ref())
        .await
        .map_err(|err| CliError::storage("cannot list certificates", &err))?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut removed = 0;
    // The engine's rule (record::remove_expired): usable certificates expired before the
    // cutoff, each under its name's issuance lock; broken records are left to `rm`.
    for entry in &entries {
        let id = &entry.id;
        let outcome = if args.dry_run {
            record::expired_before(store.as_ref(), id, cutoff)
                .await
                .map(|expired| {
                    expired.map_or(Expiry::Kept, |not_after| Expiry::Removed { not_after })
                })
        } else {
            record::remove_expired(store, id, cutoff, &LockOptions::default()).await
        };
        match outcome.map_err(|err| CliError::storage("cannot remove a certificate", &err))? {
            Expiry::Removed { not_after } => {
                removed += 1;
                println!(
                    "{verb} {} (expired {})",
                    printable(&id.prefix()),
                    inventory::format_time(not_after)
                );
            }
            Expiry::Busy { not_after } => println!(
                "skipped {} (expired {}): a node holds its lock; left for the next run",
                printable(&id.prefix()),
                inventory::format_time(not_after)
            ),
            _ => {}
        }
    }
    let stale = if args.dry_run {
        match opened.store.lock_admin() {
            Some(admin) => {
                let expired: Vec<String> = admin
                    .list_locks()
                    .await
                    .map_err(|err| CliError::storage("cannot list locks", &err))?
                    .into_iter()
                    .filter(|lock| lock.is_expired())
                    .map(|lock| lock.name)
                    .collect();
                for name in &expired {
                    println!("{verb} expired lock {}", printable(name));
                }
                expired.len().to_string()
            }
            None => "unknown (the backend cannot list locks)".to_owned(),
        }
    } else {
        store
            .clean_expired_locks()
            .await
            .map_err(|err| CliError::storage("cannot remove expired locks", &err))?
            .to_string()
    };
    println!(
        "{verb} {removed} certificates expired before {} and {stale} expired locks",
        inventory::format_time(cutoff)
    );
    Ok(())
}
