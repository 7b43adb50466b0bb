//! `certstore ls`: the certificates of a storage (or its raw keys), as a table or JSON.

use certstore::inventory::{self, Found};
use serde_json::json;

use super::records::check_key;
use crate::output::{CliError, CliResult, now_unix, print_json, printable, table, time_left};
use crate::{Global, StorageArg};

/// Arguments of `certstore ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Only certificates whose name starts with this (with --all: only keys below this
    /// storage prefix).
    prefix: Option<String>,
    /// List every raw storage key instead of certificates.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(global: &Global, args: LsArgs) -> CliResult {
    let opened = global.open(&args.storage.storage).await?;
    let store = opened.store.as_ref();
    if args.all {
        let prefix = args.prefix.unwrap_or_default();
        let keys = store
            .list(prefix.trim_end_matches('/'), true)
            .await
            .map_err(|err| CliError::storage("cannot list keys", &err))?;
        if args.json {
            return print_json(&json!(keys));
        }
        for key in keys {
            println!("{}", printable(&key));
        }
        return Ok(());
    }
    let prefix = args.prefix.unwrap_or_default().to_ascii_lowercase();
    let entries = inventory::scan(store)
        .await
        .map_err(|err| CliError::storage("cannot list certificates", &err))?;
    let now = now_unix();
    let mut found = Vec::new();
    for entry in entries.iter().filter(|e| e.id.name.starts_with(&prefix)) {
        found.push(
            inventory::load(store, entry)
                .await
                .map_err(|err| CliError::storage("cannot read a certificate", &err))?,
        );
    }
    check_key(&opened, &found).await?;
    if args.json {
        let items: Vec<serde_json::Value> = found.iter().map(|f| summary_json(f, now)).collect();
        return print_json(&json!(items));
    }
    if found.is_empty() {
        println!("no certificates in {}", printable(&opened.description));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|f| {
            let (not_after, days, status) = match f.valid() {
                Some((_, d)) => (
                    inventory::format_time(d.not_after),
                    time_left(d.not_after, now),
                    "ok".to_owned(),
                ),
                None => (
                    "-".to_owned(),
                    "-".to_owned(),
                    format!("BROKEN: {}", f.broken().unwrap_or_default()),
                ),
            };
            vec![
                f.entry.id.name.clone(),
                f.entry.id.issuer.clone(),
                not_after,
                days,
                status,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "ISSUER", "NOT AFTER", "TIME LEFT", "STATUS"],
            &rows
        )
    );
    Ok(())
}

fn summary_json(found: &Found, now: i64) -> serde_json::Value {
    let id = &found.entry.id;
    match found.valid() {
        Some((certificate, d)) => json!({
            "name": id.name,
            "issuer": id.issuer,
            "broken": false,
            "layout": certificate.layout,
            "names": d.names,
            "not_after": inventory::format_time(d.not_after),
            "not_after_unix": d.not_after,
            "days_left": d.days_left(now),
            "prefix": id.prefix(),
        }),
        None => json!({
            "name": id.name,
            "issuer": id.issuer,
            "broken": true,
            "reason": found.broken(),
            "prefix": id.prefix(),
        }),
    }
}
