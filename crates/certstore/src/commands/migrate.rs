//! `certstore migrate`: every key copied from one storage to another, verified and
//! resumable, with a progress bar.

use std::sync::Arc;
use std::time::Instant;

use cert_core::Error;
use certstore::StorageUrl;
use certstore::migrate::{MigrateOptions, MigrateReport, migrate, same_storage};

use crate::Global;
use crate::output::{CliError, CliResult, printable, progress_bar};

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

pub async fn run(global: &Global, args: MigrateArgs) -> CliResult {
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
