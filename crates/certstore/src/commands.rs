//! `ls`, `show`, `export`, `import` and `rm`: certificates in storage, read and written
//! through [`cert_core::record`], which owns their layout.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cert_core::record::{self, Layout};
use cert_core::{LockGuard, LockOptions, Locker, StoredCertificate, keys};
use certstore::inventory::{self, Found};
use serde_json::json;

use crate::output::{CliError, CliResult, confirm, now_unix, print_json, table};
use crate::{Global, StorageArg};

/// How long a command waits for a name's issuance lock, held by a node obtaining or
/// renewing that name (an ACME order can take a while).
const LOCK_WAIT: Duration = Duration::from_secs(60);

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

pub async fn ls(global: &Global, args: LsArgs) -> CliResult {
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
            println!("{key}");
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
        println!("no certificates in {}", opened.description);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|f| {
            let (not_after, days, status) = match f.valid() {
                Some((_, d)) => (
                    inventory::format_time(d.not_after),
                    d.days_left(now).to_string(),
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
            &["NAME", "ISSUER", "NOT AFTER", "DAYS LEFT", "STATUS"],
            &rows
        )
    );
    Ok(())
}

/// How a record was stored, as `ls --json` and `show` print it.
fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Bundle => "bundle",
        Layout::Parts => "parts (older release; a bundle is added at the next save)",
        _ => "unknown",
    }
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

/// Arguments of `certstore show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The server name (`example.com`, `*.example.com`).
    name: String,
    /// Only the certificate from this issuer segment (as `ls` prints it).
    #[arg(long)]
    issuer: Option<String>,
    /// Also print the private key (PEM). It is a secret: mind where the output goes.
    #[arg(long)]
    reveal_key: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The certificates stored for `name` (one per issuer segment): usable ones first, the
/// one valid longest first, broken ones last. A usage error when there is none.
async fn find(
    global: &Global,
    storage: &str,
    name: &str,
    issuer: Option<&str>,
) -> CliResult<(certstore::Opened, Vec<Found>)> {
    let opened = global.open(storage).await?;
    let safe = keys::safe_name(name);
    let entries = inventory::scan(opened.store.as_ref())
        .await
        .map_err(|err| CliError::storage("cannot list certificates", &err))?;
    let mut found = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| e.id.name == safe && issuer.is_none_or(|i| e.id.issuer == i))
    {
        found.push(
            inventory::load(opened.store.as_ref(), entry)
                .await
                .map_err(|err| CliError::storage("cannot read the certificate", &err))?,
        );
    }
    if found.is_empty() {
        return Err(CliError::usage(format!(
            "no certificate for {name} in {}; see what is stored with `certstore ls`",
            opened.url
        )));
    }
    check_key(&opened, &found).await?;
    found.sort_by_key(|f| std::cmp::Reverse(f.valid().map_or(i64::MIN, |(_, d)| d.not_after)));
    Ok((opened, found))
}

/// On an encrypted storage where no record opens and the first one's value does not
/// decrypt, the key is wrong rather than the records: that is the error (with its hint),
/// not a list of broken records.
async fn check_key(opened: &certstore::Opened, found: &[Found]) -> CliResult {
    if !opened.url.is_encrypted() || found.iter().any(|f| f.valid().is_some()) {
        return Ok(());
    }
    let Some(first) = found.first() else {
        return Ok(());
    };
    let id = &first.entry.id;
    let key = if first.entry.has_bundle {
        id.bundle_key()
    } else {
        id.meta_key()
    };
    match opened.store.load(&key).await {
        Err(err @ cert_core::Error::Corrupt { .. }) => {
            Err(CliError::storage("cannot read certificates", &err))
        }
        _ => Ok(()),
    }
}

/// The error for a name whose every record is broken: each reason, and what to do.
fn unreadable(name: &str, found: &[Found]) -> CliError {
    let reasons: Vec<String> = found
        .iter()
        .filter_map(|f| f.broken().map(|reason| format!("{}: {reason}", f.entry.id)))
        .collect();
    CliError::failed(format!(
        "the certificate for {name} cannot be read: {}; a server managing the name issues it \
         again, or remove it with `certstore rm {name}`",
        reasons.join("; ")
    ))
}

pub async fn show(global: &Global, args: ShowArgs) -> CliResult {
    let (opened, found) = find(
        global,
        &args.storage.storage,
        &args.name,
        args.issuer.as_deref(),
    )
    .await?;
    if found.iter().all(|f| f.valid().is_none()) {
        return Err(unreadable(&args.name, &found));
    }
    let now = now_unix();
    let key_of = |f: &Found| {
        f.valid()
            .filter(|_| args.reveal_key)
            .map(|(certificate, _)| certificate.stored.key_pem.clone())
    };
    if args.json {
        let items: Vec<serde_json::Value> = found
            .iter()
            .map(|f| {
                let id = &f.entry.id;
                let mut value = match f.valid() {
                    Some((certificate, d)) => json!({
                        "name": id.name,
                        "issuer_segment": id.issuer,
                        "broken": false,
                        "layout": certificate.layout,
                        "subject": d.subject,
                        "names": d.names,
                        "issuer": d.issuer,
                        "serial": d.serial,
                        "not_before": inventory::format_time(d.not_before),
                        "not_after": inventory::format_time(d.not_after),
                        "days_left": d.days_left(now),
                        "key_type": d.key_type,
                        "sha256_fingerprint": d.sha256_fingerprint,
                        "chain_length": d.chain_length,
                    }),
                    None => json!({
                        "name": id.name,
                        "issuer_segment": id.issuer,
                        "broken": true,
                        "reason": f.broken(),
                    }),
                };
                value["storage"] = json!(opened.url.redacted());
                value["keys"] = json!({
                    "bundle": f.entry.has_bundle.then(|| id.bundle_key()),
                    "chain": f.entry.has_chain.then(|| id.chain_key()),
                    "private_key": f.entry.has_key.then(|| id.key_key()),
                    "metadata": f.entry.has_meta.then(|| id.meta_key()),
                });
                if let Some(pem) = key_of(f) {
                    value["private_key_pem"] = json!(pem.as_str());
                }
                value
            })
            .collect();
        return print_json(&json!(items));
    }
    for (i, f) in found.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let id = &f.entry.id;
        let mut rows: Vec<(&str, String)> = Vec::new();
        match f.valid() {
            Some((certificate, d)) => {
                rows.push(("subject", d.subject.clone()));
                rows.push(("names", d.names.join(", ")));
                rows.push(("issuer", d.issuer.clone()));
                rows.push(("not before", inventory::format_time(d.not_before)));
                rows.push((
                    "not after",
                    format!(
                        "{} ({} days left)",
                        inventory::format_time(d.not_after),
                        d.days_left(now)
                    ),
                ));
                rows.push(("key type", d.key_type.clone()));
                rows.push(("serial", d.serial.clone()));
                rows.push(("sha-256", d.sha256_fingerprint.clone()));
                rows.push(("chain", format!("{} certificate(s)", d.chain_length)));
                rows.push(("layout", layout_name(certificate.layout).to_owned()));
            }
            None => rows.push((
                "BROKEN",
                format!("{} ({id})", f.broken().unwrap_or_default()),
            )),
        }
        rows.push(("stored in", opened.description.clone()));
        rows.push(("record", id.prefix()));
        for (label, value) in rows {
            println!("{:<12}{value}", format!("{label}:"));
        }
        if let Some(pem) = key_of(f) {
            print!("{}", pem.as_str());
        }
    }
    Ok(())
}

/// Arguments of `certstore export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The server name.
    name: String,
    /// The directory to write `<name>.crt` and `<name>.key` to (created with mode 0700).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The issuer segment, when several issuers hold a certificate for the name (default:
    /// the one valid longest).
    #[arg(long)]
    issuer: Option<String>,
    /// Overwrite files that already exist.
    #[arg(long)]
    force: bool,
}

pub async fn export(global: &Global, args: ExportArgs) -> CliResult {
    let (_opened, found) = find(
        global,
        &args.storage.storage,
        &args.name,
        args.issuer.as_deref(),
    )
    .await?;
    // Chain and key come from one record (the bundle, when there is one), so the files
    // written always belong together.
    let Some((certificate, _)) = found.first().and_then(Found::valid) else {
        return Err(unreadable(&args.name, &found));
    };
    let base = &found[0].entry.id.name;
    let chain_path = args.out.join(format!("{base}.crt"));
    let key_path = args.out.join(format!("{base}.key"));
    if !args.force {
        for path in [&chain_path, &key_path] {
            if path.exists() {
                return Err(CliError::usage(format!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                )));
            }
        }
    }
    make_private_dir(&args.out)?;
    write_private(&key_path, certificate.stored.key_pem.as_bytes())?;
    write_private(&chain_path, certificate.stored.chain_pem.as_bytes())?;
    println!("{}", chain_path.display());
    println!("{}", key_path.display());
    Ok(())
}

fn make_private_dir(dir: &Path) -> CliResult {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| CliError::failed(format!("cannot create {}: {err}", dir.display())))?;
    }
    let meta = std::fs::metadata(dir)
        .map_err(|err| CliError::failed(format!("cannot read {}: {err}", dir.display())))?;
    if !meta.is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|err| {
            CliError::failed(format!("cannot restrict {} to 0700: {err}", dir.display()))
        })?;
    }
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> CliResult {
    let fail =
        |err: std::io::Error| CliError::failed(format!("cannot write {}: {err}", path.display()));
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(err));
    }
    Ok(())
}

/// Arguments of `certstore import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// The PEM certificate chain, leaf first.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// The PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The server name to store it under (default: the certificate's first name).
    #[arg(long)]
    name: Option<String>,
    /// The issuer segment to store it under. The engine serves a stored certificate
    /// from the issuers it is configured with, so use `local` to have `certstore serve`
    /// pick it up.
    #[arg(long, default_value = "imported")]
    issuer: String,
}

pub async fn import(global: &Global, args: ImportArgs) -> CliResult {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|err| CliError::usage(format!("cannot read {}: {err}", path.display())))
    };
    let chain = read(&args.cert)?;
    let key = zeroize::Zeroizing::new(read(&args.key)?);
    let key_type = inventory::key_type(&chain);
    let issuer = keys::issuer_key(&args.issuer);
    let stored = StoredCertificate::from_pem(&chain, &key, &issuer, key_type)
        .map_err(|err| CliError::usage(format!("cannot import: {err}")))?;
    let name = match args.name {
        Some(name) => name,
        None => stored
            .meta
            .names
            .first()
            .cloned()
            .ok_or_else(|| CliError::usage("the certificate names no server; pass --name"))?,
    };
    let opened = global.open(&args.storage.storage).await?;
    // Under the name's issuance lock, like the engine, and fenced by it: the bundle (the
    // commit point) first, then the copies.
    let guard = issue_lock(&opened, &name).await?;
    let lease = guard.lease();
    let saved = record::save_certificate(opened.store.as_ref(), &name, &stored, Some(&lease)).await;
    let _ = guard.release().await;
    let id = saved.map_err(|err| CliError::storage("cannot store the certificate", &err))?;
    println!(
        "imported {} ({}) as {}",
        name,
        stored.meta.names.join(", "),
        id.prefix()
    );
    Ok(())
}

/// Waits (up to [`LOCK_WAIT`]) for the issuance lock of the record name `name`.
async fn issue_lock(opened: &certstore::Opened, name: &str) -> CliResult<LockGuard> {
    let locker: Arc<dyn Locker> = opened.store.clone();
    let options = LockOptions::default().with_timeout(LOCK_WAIT);
    cert_core::lock(locker, &keys::issue_lock(name), &options)
        .await
        .map_err(|err| match err {
            cert_core::Error::LockTimeout { .. } => CliError::failed(format!(
                "a node has been obtaining or renewing {name} for over {}s (it holds the \
                 name's lock); try again later",
                LOCK_WAIT.as_secs()
            )),
            err => CliError::storage("cannot take the name's lock", &err),
        })
}

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

pub async fn rm(global: &Global, args: RmArgs) -> CliResult {
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
                "remove the certificate {id} from {}? A server managing the name issues it again. [y/N] ",
                opened.description
            ),
            "refusing to remove a certificate without confirmation: pass --yes",
        )?;
    }
    // Under the name's lock, so no node is writing this record while it goes; copies
    // first and the bundle last, so a crash leaves the record whole or nothing loadable.
    let guard = issue_lock(&opened, &id.name).await?;
    let lease = guard.lease();
    let removed = record::remove_certificate(opened.store.as_ref(), id, Some(&lease)).await;
    let _ = guard.release().await;
    match removed {
        Ok(true) => {
            println!("removed {}", id.prefix());
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
