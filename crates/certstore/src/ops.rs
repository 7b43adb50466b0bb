//! `migrate`, `rekey`, `locks`, `unlock` and `clean`: operating a storage.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cert_core::record::{self, Expiry};
use cert_core::{Error, LockOptions, Locker, keys, try_lock};
use certstore::StorageUrl;
use certstore::inventory;
use certstore::migrate::{MigrateOptions, MigrateReport, migrate, same_storage};
use serde_json::json;

use crate::output::{
    CliError, CliResult, confirm, human, now_unix, parse_duration, print_json, printable,
    progress_bar, table,
};
use crate::{Global, StorageArg};

/// Arguments of `certstore migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The storage URL to copy from.
    from: String,
    /// The storage URL to copy to.
    to: String,
    /// Only compare: print how many keys would be copied, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only the keys below this storage prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Keys copied at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Required to copy from an encrypted storage to one that is not: the copies are
    /// written decrypted (private keys in plain text).
    #[arg(long)]
    decrypt: bool,
}

/// Refuses a migration onto its own source (any spelling of the same storage, with or
/// without `encrypted+`: copying an encrypted storage onto its plain self would replace
/// every sealed value by its plain text), and a decrypting one without `--decrypt`.
/// Checked before either storage is opened, so a refused command creates nothing.
fn check_migration(args: &MigrateArgs) -> CliResult {
    // A URL that does not parse is reported by `open`, with its own message.
    let (Ok(from), Ok(to)) = (StorageUrl::parse(&args.from), StorageUrl::parse(&args.to)) else {
        return Ok(());
    };
    if same_storage(&from, &to) {
        return Err(CliError::usage(format!(
            "{from} and {to} are the same storage; migrate copies between two storages (to \
             re-seal a storage under a new key, use `certstore rekey`)"
        )));
    }
    if from.is_encrypted() && !to.is_encrypted() && !args.dry_run && !args.decrypt {
        return Err(CliError::usage(format!(
            "{from} is encrypted and {to} is not: the copies would hold private keys in plain \
             text; pass --decrypt to mean it, or use encrypted+{to}"
        )));
    }
    Ok(())
}

pub async fn migrate_cmd(global: &Global, args: MigrateArgs) -> CliResult {
    check_migration(&args)?;
    let from = global.open(&args.from).await?;
    let to = global.open(&args.to).await?;
    let options = MigrateOptions::default()
        .with_prefix(args.prefix.trim_end_matches('/'))
        .with_dry_run(args.dry_run)
        .with_concurrency(args.concurrency);
    let bar = progress_bar(global.quiet, "copying");
    let started = Instant::now();
    let source = from.url.to_string();
    let report = migrate(
        Arc::clone(&from.store),
        Arc::clone(&to.store),
        &options,
        |p: &MigrateReport| {
            if let Some(lock) = &p.waiting_for {
                // Printed even with --quiet: without it a wait looks like a hang.
                bar.suspend(|| {
                    eprintln!(
                        "waiting for the lock {} on {source}: a `certstore clean` or a server \
                         cleaning holds it (or held it and died: it expires by itself); \
                         giving up after 60s",
                        printable(lock)
                    );
                });
                return;
            }
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        },
    )
    .await;
    bar.finish_and_clear();
    let report = report.map_err(|err| match err {
        Error::Conflict { reason, .. } => {
            CliError::failed(format!("cannot migrate: {reason}; wait for it to finish"))
        }
        err => CliError::storage("migration stopped", &err),
    })?;
    for (key, reason) in &report.failed {
        eprintln!(
            "failed: {}: {}",
            printable(key),
            printable(&crate::output::scrub(reason))
        );
    }
    let verb = if args.dry_run { "would copy" } else { "copied" };
    println!(
        "{verb} {}, skipped {} identical, {} failed, of {} keys from {} to {} in {:.1}s",
        report.copied,
        report.skipped,
        report.failed.len(),
        report.total,
        from.url,
        to.url,
        started.elapsed().as_secs_f64()
    );
    if !report.failed.is_empty() {
        return Err(CliError::failed(format!(
            "{} keys were not copied; run the same command again to retry them",
            report.failed.len()
        )));
    }
    Ok(())
}

/// Arguments of `certstore rekey`.
#[derive(Debug, clap::Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Only the values below this storage prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Also seal values stored unencrypted (moving a plain storage to encryption).
    #[arg(long)]
    seal_plaintext: bool,
}

#[cfg(feature = "encrypted")]
pub async fn rekey(global: &Global, args: RekeyArgs) -> CliResult {
    let mut options = global.options.clone();
    options.plaintext_migration = args.seal_plaintext;
    let opened = crate::output::open(&args.storage.storage, &options).await?;
    let Some(encrypted) = &opened.encrypted else {
        return Err(CliError::usage(format!(
            "rekey needs an encrypted storage: use encrypted+{}",
            opened.url
        )));
    };
    let bar = progress_bar(global.quiet, "re-sealing");
    let report = encrypted
        .rekey(args.prefix.trim_end_matches('/'), |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
        })
        .await;
    bar.finish_and_clear();
    let report = report.map_err(|err| CliError::storage("re-keying stopped", &err))?;
    println!(
        "re-sealed {}, already under the current key {}, vanished {}, of {} values; \
         every value now opens with the current key alone",
        report.resealed, report.already_current, report.vanished, report.total
    );
    Ok(())
}

#[cfg(not(feature = "encrypted"))]
pub async fn rekey(_global: &Global, _args: RekeyArgs) -> CliResult {
    Err(CliError::usage(
        "this build has no encryption support (the `encrypted` feature)",
    ))
}

/// Arguments of `certstore locks`.
#[derive(Debug, clap::Args)]
pub struct LocksArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn lock_admin(opened: &certstore::Opened) -> CliResult<Arc<dyn certstore::LockAdmin>> {
    opened.locks.clone().ok_or_else(|| {
        CliError::usage(format!(
            "the {} backend cannot list locks (file, Redis, SQL, S3 and Azure storages can)",
            opened.url.backend()
        ))
    })
}

pub async fn locks(global: &Global, args: LocksArgs) -> CliResult {
    let opened = global.open(&args.storage.storage).await?;
    let admin = lock_admin(&opened)?;
    let locks = admin
        .list_locks()
        .await
        .map_err(|err| CliError::storage("cannot list locks", &err))?;
    let now = SystemTime::now();
    let age = |since: Option<SystemTime>| since.and_then(|s| now.duration_since(s).ok());
    if args.json {
        let items: Vec<serde_json::Value> = locks
            .iter()
            .map(|lock| {
                json!({
                    "name": lock.name,
                    "token": lock.token,
                    "age_seconds": age(lock.since).map(|a| a.as_secs_f64()),
                    "expires_in_seconds": lock.expires_in.map(|e| e.as_secs_f64()),
                    "expired": lock.is_expired(),
                })
            })
            .collect();
        return print_json(&json!(items));
    }
    if locks.is_empty() {
        println!("no locks held in {}", printable(&opened.description));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|lock| {
            vec![
                lock.name.clone(),
                lock.token.clone(),
                age(lock.since).map_or_else(|| "-".to_owned(), human),
                match lock.expires_in {
                    Some(left) if left.is_zero() => "expired".to_owned(),
                    Some(left) => human(left),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "TOKEN", "AGE", "EXPIRES IN"], &rows));
    Ok(())
}

/// Arguments of `certstore unlock`.
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The lock's name, as `certstore locks` prints it.
    name: String,
    /// Required: removing a lock another process holds breaks its mutual exclusion. Only
    /// for a lock whose holder is known to be gone.
    #[arg(long, required = true)]
    force: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

pub async fn unlock(global: &Global, args: UnlockArgs) -> CliResult {
    let opened = global.open(&args.storage.storage).await?;
    let admin = lock_admin(&opened)?;
    let held = admin
        .list_locks()
        .await
        .map_err(|err| CliError::storage("cannot list locks", &err))?
        .into_iter()
        .find(|lock| lock.name == args.name);
    let Some(held) = held else {
        return Err(CliError::usage(format!(
            "no lock named {} in {}; see them with `certstore locks`",
            args.name, opened.url
        )));
    };
    if !args.yes {
        confirm(
            &format!(
                "remove lock {} held by {}? Its holder loses mutual exclusion. [y/N] ",
                printable(&held.name),
                printable(&held.token)
            ),
            "refusing to remove a lock without confirmation: pass --yes",
        )?;
    }
    let removed = admin
        .force_release(&args.name)
        .await
        .map_err(|err| CliError::storage("cannot remove the lock", &err))?;
    if removed {
        println!("removed lock {}", printable(&args.name));
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "lock {} was released meanwhile; nothing removed",
            args.name
        )))
    }
}

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

pub async fn clean(global: &Global, args: CleanArgs) -> CliResult {
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
        match &opened.locks {
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
