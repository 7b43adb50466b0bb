//! `certstore rm`: one certificate record removed under its name's lock.

use cert_core::{keys, record};
use certstore::inventory;

use super::records::record_lock;
use crate::output::{CliError, CliResult, confirm, printable};
use crate::{Global, StorageArg};

/// Arguments of `certstore rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The server name (`example.com`, `*.example.com`).
    name: String,
    /// The issuer segment (as `ls` prints it); required when several issuers hold a
    /// certificate for the name.
    #[arg(long)]
    issuer: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
}

pub async fn run(global: &Global, args: RmArgs) -> CliResult {
    let opened = global.open(&args.storage.storage).await?;
    let safe = keys::safe_name(&args.name);
    let entries = inventory::scan(opened.store.as_ref())
        .await
        .map_err(|err| CliError::storage("cannot list certificates", &err))?;
    let matching: Vec<_> = entries
        .into_iter()
        .filter(|e| e.id.name == safe && args.issuer.as_deref().is_none_or(|i| e.id.issuer == i))
        .collect();
    let entry = match matching.as_slice() {
        [] => {
            return Err(CliError::usage(format!(
                "no certificate for {} in {}; see what is stored with `certstore ls`",
                args.name, opened.url
            )));
        }
        [one] => one,
        several => {
            let issuers: Vec<&str> = several.iter().map(|e| e.id.issuer.as_str()).collect();
            return Err(CliError::usage(format!(
                "several issuers hold a certificate for {} ({}); pass --issuer",
                args.name,
                issuers.join(", ")
            )));
        }
    };
    let id = &entry.id;
    if !args.yes {
        confirm(
            &format!(
                "remove the certificate {} from {}? A server managing the name issues it again. [y/N] ",
                printable(&id.to_string()),
                printable(&opened.description)
            ),
            "refusing to remove a certificate without confirmation: pass --yes",
        )?;
    }
    // Under the name's lock, so no node is writing this record while it goes; copies
    // first and the bundle last, so a crash leaves the record whole or nothing loadable.
    let guard = record_lock(&opened, id).await?;
    let lease = guard.lease();
    let removed = record::remove_certificate(opened.store.as_ref(), id, Some(&lease)).await;
    let _ = guard.release().await;
    match removed {
        Ok(true) => {
            println!("removed {}", printable(&id.prefix()));
            Ok(())
        }
        Ok(false) => Err(CliError::usage(format!(
            "{} was removed meanwhile; nothing removed",
            id.prefix()
        ))),
        Err(cert_core::Error::LockLost { .. }) => Err(CliError::failed(format!(
            "the lock on {} was lost during the removal; run the command again",
            args.name
        ))),
        Err(err) => Err(CliError::storage("cannot remove the certificate", &err)),
    }
}
