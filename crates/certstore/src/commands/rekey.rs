//! `certstore rekey`: every value of an encrypted storage re-sealed under the current key.

use crate::output::{CliError, CliResult};
use crate::{Global, StorageArg};

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
pub async fn run(global: &Global, args: RekeyArgs) -> CliResult {
    let mut options = global.options.clone();
    options.plaintext_migration = args.seal_plaintext;
    let opened = crate::output::open(&args.storage.storage, &options).await?;
    let Some(encrypted) = &opened.encrypted else {
        return Err(CliError::usage(format!(
            "rekey needs an encrypted storage: use encrypted+{}",
            opened.url
        )));
    };
    let bar = crate::output::progress_bar(global.quiet, "re-sealing");
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
pub async fn run(_global: &Global, _args: RekeyArgs) -> CliResult {
    Err(CliError::usage(
        "this build has no encryption support (the `encrypted` feature)",
    ))
}
