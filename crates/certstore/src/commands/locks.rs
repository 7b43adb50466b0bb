//! `certstore locks` and `certstore unlock`: the locks held in a storage, listed, and one
//! removed whatever its holder.

use std::time::SystemTime;

use serde_json::json;

use crate::output::{CliError, CliResult, confirm, human, print_json, printable, table};
use crate::{Global, StorageArg};

/// Arguments of `certstore locks`.
#[derive(Debug, clap::Args)]
pub struct LocksArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn lock_admin(opened: &certstore::Opened) -> CliResult<&dyn certstore::LockAdmin> {
    opened.store.lock_admin().ok_or_else(|| {
        CliError::usage(format!(
            "the {} backend cannot list locks (file, Redis, SQL, S3 and Azure storages can)",
            opened.url.backend()
        ))
    })
}

pub async fn list(global: &Global, args: LocksArgs) -> CliResult {
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
