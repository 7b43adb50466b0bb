//! `ls`, `show`, `export` and `import`: certificates in storage.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cert_core::{StorageExt, StoredCertificate, keys};
use certstore::inventory::{self, Found};
use serde_json::json;

use crate::output::{CliError, CliResult, now_unix, print_json, table};
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
    for entry in entries.iter().filter(|e| e.name.starts_with(&prefix)) {
        found.push(
            inventory::load(store, entry)
                .await
                .map_err(|err| CliError::storage("cannot read a certificate", &err))?,
        );
    }
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
            let (not_after, days) = match &f.details {
                Ok(d) => (
                    inventory::format_time(d.not_after),
                    d.days_left(now).to_string(),
                ),
                Err(reason) => (format!("({reason})"), "-".to_owned()),
            };
            vec![
                f.entry.name.clone(),
                f.entry.issuer.clone(),
                not_after,
                days,
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["NAME", "ISSUER", "NOT AFTER", "DAYS LEFT"], &rows)
    );
    Ok(())
}

fn summary_json(found: &Found, now: i64) -> serde_json::Value {
    match &found.details {
        Ok(d) => json!({
            "name": found.entry.name,
            "issuer": found.entry.issuer,
            "names": d.names,
            "not_after": inventory::format_time(d.not_after),
            "not_after_unix": d.not_after,
            "days_left": d.days_left(now),
            "has_key": found.entry.has_key,
            "prefix": found.entry.prefix,
        }),
        Err(reason) => json!({
            "name": found.entry.name,
            "issuer": found.entry.issuer,
            "has_key": found.entry.has_key,
            "prefix": found.entry.prefix,
            "error": reason,
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

/// The certificates stored for `name` (one per issuer), newest first.
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
        .filter(|e| e.name == safe && issuer.is_none_or(|i| e.issuer == i))
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
    found.sort_by_key(|f| std::cmp::Reverse(f.details.as_ref().map_or(i64::MIN, |d| d.not_after)));
    Ok((opened, found))
}

pub async fn show(global: &Global, args: ShowArgs) -> CliResult {
    let (opened, found) = find(
        global,
        &args.storage.storage,
        &args.name,
        args.issuer.as_deref(),
    )
    .await?;
    let now = now_unix();
    let mut keys_pem = Vec::new();
    if args.reveal_key {
        for f in &found {
            let key = opened
                .store
                .load_opt(&f.entry.key_key())
                .await
                .map_err(|err| CliError::storage("cannot read the private key", &err))?;
            keys_pem.push(key.map(|k| String::from_utf8_lossy(&k).into_owned()));
        }
    }
    if args.json {
        let items: Vec<serde_json::Value> = found
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut value = match &f.details {
                    Ok(d) => json!({
                        "name": f.entry.name,
                        "issuer_segment": f.entry.issuer,
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
                    Err(reason) => json!({"name": f.entry.name, "issuer_segment": f.entry.issuer, "error": reason}),
                };
                value["storage"] = json!(opened.url.redacted());
                value["keys"] = json!({
                    "chain": f.entry.has_chain.then(|| f.entry.chain_key()),
                    "private_key": f.entry.has_key.then(|| f.entry.key_key()),
                    "metadata": f.entry.has_meta.then(|| f.entry.meta_key()),
                });
                if let Some(Some(pem)) = keys_pem.get(i) {
                    value["private_key_pem"] = json!(pem);
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
        let mut rows: Vec<(&str, String)> = Vec::new();
        match &f.details {
            Ok(d) => {
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
            }
            Err(reason) => rows.push(("error", reason.clone())),
        }
        rows.push(("stored in", opened.description.clone()));
        rows.push(("chain key", f.entry.chain_key()));
        rows.push((
            "key key",
            if f.entry.has_key {
                f.entry.key_key()
            } else {
                "(missing)".to_owned()
            },
        ));
        for (label, value) in rows {
            println!("{:<12}{value}", format!("{label}:"));
        }
        match keys_pem.get(i) {
            Some(Some(pem)) => print!("{pem}"),
            Some(None) => println!("(no private key stored)"),
            None => {}
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
    let (opened, found) = find(
        global,
        &args.storage.storage,
        &args.name,
        args.issuer.as_deref(),
    )
    .await?;
    let chosen = &found[0];
    if let Err(reason) = &chosen.details {
        return Err(CliError::usage(format!(
            "the certificate for {} is not usable: {reason}",
            args.name
        )));
    }
    let chain = opened
        .store
        .load(&chosen.entry.chain_key())
        .await
        .map_err(|err| CliError::storage("cannot read the certificate", &err))?;
    let key = zeroize::Zeroizing::new(
        opened
            .store
            .load_opt(&chosen.entry.key_key())
            .await
            .map_err(|err| CliError::storage("cannot read the private key", &err))?
            .ok_or_else(|| {
                CliError::usage(format!(
                    "no private key stored for {} at {}",
                    args.name,
                    chosen.entry.key_key()
                ))
            })?,
    );
    let base = &chosen.entry.name;
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
    write_private(&key_path, &key)?;
    write_private(&chain_path, &chain)?;
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
    let meta = serde_json::to_vec(&stored.meta)
        .map_err(|err| CliError::failed(format!("cannot encode metadata: {err}")))?;
    // The order the engine writes in: key, chain, then metadata, which a reader checks.
    for (key, bytes) in [
        (
            keys::certificate_key(&issuer, &name),
            stored.key_pem.as_bytes(),
        ),
        (
            keys::certificate_chain(&issuer, &name),
            stored.chain_pem.as_bytes(),
        ),
        (keys::certificate_meta(&issuer, &name), meta.as_slice()),
    ] {
        opened
            .store
            .store(&key, bytes)
            .await
            .map_err(|err| CliError::storage("cannot store the certificate", &err))?;
    }
    println!(
        "imported {} ({}) as {}",
        name,
        stored.meta.names.join(", "),
        keys::certificate_prefix(&issuer, &name)
    );
    Ok(())
}
