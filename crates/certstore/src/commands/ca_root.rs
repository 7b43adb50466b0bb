//! `certstore ca-root`: the internal CA's root certificate, for clients to trust.

use std::path::PathBuf;

use cert_core::{InternalIssuer, keys};

use super::export::{check_target, write_file};
use crate::output::{CliError, CliResult, printable};
use crate::{Global, StorageArg};

/// Arguments of `certstore ca-root`.
#[derive(Debug, clap::Args)]
pub struct CaRootArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The internal CA's name.
    #[arg(long, default_value = "local", value_name = "NAME")]
    ca: String,
    /// Write the root to this file (mode 0644: a certificate is public) instead of
    /// printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Overwrite the file if it exists (never a symbolic link).
    #[arg(long, requires = "out")]
    force: bool,
}

pub async fn run(global: &Global, args: CaRootArgs) -> CliResult {
    let opened = global.open(&args.storage.storage).await?;
    let root = InternalIssuer::load_root(opened.store.as_ref(), &args.ca)
        .await
        .map_err(|err| CliError::storage("cannot read the internal CA", &err))?
        .ok_or_else(|| {
            CliError::usage(format!(
                "no internal CA {:?} in {} (nothing at {}/); `certstore serve` or a server \
                 with an InternalIssuer on this storage creates it",
                args.ca,
                opened.url,
                keys::ca_prefix(&args.ca)
            ))
        })?;
    match &args.out {
        None => print!("{root}"),
        Some(path) => {
            check_target(path, args.force)?;
            write_file(path, root.as_bytes(), 0o644)?;
            println!("{}", printable(&path.display().to_string()));
        }
    }
    Ok(())
}
