//! `ls`, `show`, `export`, `import` and `rm`: certificates in storage, read and written
//! through [`cert_core::record`], which owns their layout.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cert_core::record::{self, CertificateId, Layout, RecordState};
use cert_core::{LockGuard, LockOptions, Locker, StoredCertificate, keys};
use certstore::inventory::{self, Found};
use serde_json::json;

use crate::output::{
    CliError, CliResult, confirm, now_unix, print_json, printable, random_suffix, table, time_left,
};
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
                    if d.not_after > now {
                        format!(
                            "{} ({} left)",
                            inventory::format_time(d.not_after),
                            time_left(d.not_after, now)
                        )
                    } else {
                        format!("{} (expired)", inventory::format_time(d.not_after))
                    },
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
            println!("{:<12}{}", format!("{label}:"), printable(&value));
        }
        if let Some(pem) = key_of(f) {
            for line in pem.lines() {
                println!("{}", printable(line));
            }
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
    /// The directory to write `<name>.crt` and `<name>.key` to. A missing directory is
    /// created with mode 0700; an existing one is used as it is.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The issuer segment, when several issuers hold a certificate for the name (default:
    /// the one valid longest).
    #[arg(long)]
    issuer: Option<String>,
    /// Overwrite files that already exist (never a symbolic link).
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
    for path in [&chain_path, &key_path] {
        check_target(path, args.force)?;
    }
    make_private_dir(&args.out)?;
    write_private(&key_path, certificate.stored.key_pem.as_bytes())?;
    write_private(&chain_path, certificate.stored.chain_pem.as_bytes())?;
    println!("{}", printable(&chain_path.display().to_string()));
    println!("{}", printable(&key_path.display().to_string()));
    Ok(())
}

/// Refuses a target file that is a symbolic link (whoever planted it chose where a private
/// key would land), that is not a regular file, or that exists without `force`.
fn check_target(path: &Path, force: bool) -> CliResult {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(CliError::usage(format!(
            "{shown} is a symbolic link; refusing to write a certificate or key through it"
        ))),
        Ok(meta) if !meta.is_file() => Err(CliError::usage(format!(
            "{shown} exists and is not a regular file"
        ))),
        Ok(_) if !force => Err(CliError::usage(format!(
            "{shown} already exists; pass --force to overwrite it"
        ))),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(CliError::failed(format!("cannot read {shown}: {err}"))),
    }
}

/// Creates `dir` with mode 0700 when it is missing. An existing directory keeps its mode:
/// it may be shared on purpose (a sticky 1777 directory, a group's drop box), and the
/// files written into it are 0600 whatever the directory allows.
fn make_private_dir(dir: &Path) -> CliResult {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(CliError::usage(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(CliError::failed(format!(
                "cannot read {}: {err}",
                dir.display()
            )));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| CliError::failed(format!("cannot create {}: {err}", dir.display())))
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file renamed into place.
///
/// The temporary file is created with `create_new` (`O_CREAT | O_EXCL`), which fails on
/// anything already at that name, a symbolic link included, so nothing is ever written
/// through a link; its name is random, so nobody can plant one there in advance. The
/// rename replaces a link that appeared at `path` since [`check_target`] instead of
/// following it, and a reader never sees a half-written key.
fn write_private(path: &Path, bytes: &[u8]) -> CliResult {
    let fail =
        |err: std::io::Error| CliError::failed(format!("cannot write {}: {err}", path.display()));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", random_suffix()));
    let tmp = path.with_file_name(tmp_name);
    let mut created = false;
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        created = true;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        // Only a file this call created is removed: never something another user put there.
        if created {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(fail(err));
    }
    Ok(())
}

/// The most `import` reads of one file: a PEM chain or key is a few KiB, so anything
/// bigger is a mistake (`--key /dev/zero`, a disk image) and is refused after reading
/// this much, not after filling memory.
const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// The most certificates `import` accepts in one chain: real chains hold two to four.
const MAX_CHAIN_LENGTH: usize = 100;

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
    /// The server name to store it under (default: the certificate's first name). The
    /// certificate must cover it: one of its names, or a wildcard matching it.
    #[arg(long)]
    name: Option<String>,
    /// The issuer segment to store it under. The engine serves a stored certificate
    /// from the issuers it is configured with, so use `local` to have `certstore serve`
    /// pick it up.
    #[arg(long, default_value = "imported")]
    issuer: String,
    /// Replace a different certificate (or an unreadable record) already stored for the
    /// name.
    #[arg(long)]
    force: bool,
}

/// Reads a PEM file of at most [`MAX_INPUT_BYTES`], through a bounded reader so that a
/// device or a huge file fails fast. The bytes are wiped once read (a key file).
fn read_pem(path: &Path) -> CliResult<zeroize::Zeroizing<String>> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|err| CliError::usage(format!("cannot read {shown}: {err}")))?;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| CliError::usage(format!("cannot read {shown}: {err}")))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(CliError::usage(format!(
            "{shown} is larger than 1 MiB: not a PEM certificate chain or key"
        )));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::usage(format!("{shown} is not PEM text")))?;
    Ok(zeroize::Zeroizing::new(text.to_owned()))
}

/// Checks what `--cert` holds beyond what parsing checks: no private key (the chain is
/// stored as given, and copied where keys are not expected), at most
/// [`MAX_CHAIN_LENGTH`] certificates.
fn check_chain_file(path: &Path, pem: &str) -> CliResult {
    let labels = pem
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-----BEGIN "))
        .map(|rest| rest.trim_end_matches('-').trim());
    let mut certificates = 0;
    for label in labels {
        if label.contains("PRIVATE KEY") {
            return Err(CliError::usage(format!(
                "{} holds a private key; pass only certificates with --cert and the key with \
                 --key",
                path.display()
            )));
        }
        if label == "CERTIFICATE" {
            certificates += 1;
        }
    }
    if certificates > MAX_CHAIN_LENGTH {
        return Err(CliError::usage(format!(
            "{} holds {certificates} certificates; a chain holds at most {MAX_CHAIN_LENGTH}",
            path.display()
        )));
    }
    Ok(())
}

/// Whether a certificate naming `names` is valid for `name`: one of them equal to it
/// (ignoring case and a final dot), or a wildcard `*.suffix` matching exactly one label
/// before `suffix`, as TLS clients match them (RFC 6125).
fn covers(names: &[String], name: &str) -> bool {
    let normal = |text: &str| text.trim_end_matches('.').to_ascii_lowercase();
    let name = normal(name);
    names.iter().any(|candidate| {
        let candidate = normal(candidate);
        if candidate == name {
            return true;
        }
        match (candidate.strip_prefix("*."), name.split_once('.')) {
            (Some(suffix), Some((label, rest))) => {
                !label.is_empty() && !label.contains('*') && rest == suffix
            }
            _ => false,
        }
    })
}

/// The DER of a PEM chain's leaf.
fn leaf_der(chain_pem: &str) -> Option<Vec<u8>> {
    cert_core::certificate::parse_chain(chain_pem)
        .ok()?
        .first()
        .map(|leaf| leaf.as_ref().to_vec())
}

pub async fn import(global: &Global, args: ImportArgs) -> CliResult {
    let chain = read_pem(&args.cert)?;
    check_chain_file(&args.cert, &chain)?;
    let key = read_pem(&args.key)?;
    let key_type = inventory::key_type(&chain);
    let issuer = keys::issuer_key(&args.issuer);
    let stored = StoredCertificate::from_pem(&chain, &key, &issuer, key_type)
        .map_err(|err| CliError::usage(format!("cannot import: {err}")))?;
    let name = match args.name {
        Some(name) if covers(&stored.meta.names, &name) => name,
        Some(name) => {
            return Err(CliError::usage(format!(
                "the certificate is not valid for {name} (it names {}); pass one of its \
                 names with --name",
                stored.meta.names.join(", ")
            )));
        }
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
    let saved = match replaceable(&opened, &name, &stored, args.force).await {
        Ok(()) => {
            let lease = guard.lease();
            record::save_certificate(opened.store.as_ref(), &name, &stored, Some(&lease))
                .await
                .map_err(|err| CliError::storage("cannot store the certificate", &err))
        }
        Err(err) => Err(err),
    };
    let _ = guard.release().await;
    let id = saved?;
    println!(
        "imported {} ({}) as {}",
        printable(&name),
        printable(&stored.meta.names.join(", ")),
        printable(&id.prefix())
    );
    Ok(())
}

/// Refuses (without `force`) to overwrite what is stored for `name` under the new
/// certificate's issuer segment, unless it is the same certificate (the same leaf):
/// another certificate or a record that cannot be read is replaced only on purpose.
async fn replaceable(
    opened: &certstore::Opened,
    name: &str,
    stored: &StoredCertificate,
    force: bool,
) -> CliResult {
    if force {
        return Ok(());
    }
    // The record `save_certificate` writes, named by `cert_core::record`.
    let id = CertificateId::new(&stored.meta.issuer, name);
    let existing = record::load_certificate(opened.store.as_ref(), &id)
        .await
        .map_err(|err| CliError::storage("cannot read the stored certificate", &err))?;
    match existing {
        None => Ok(()),
        Some(RecordState::Valid(loaded))
            if leaf_der(&loaded.stored.chain_pem).is_some()
                && leaf_der(&loaded.stored.chain_pem) == leaf_der(&stored.chain_pem) =>
        {
            Ok(())
        }
        Some(RecordState::Valid(loaded)) => Err(CliError::usage(format!(
            "{} already holds a different certificate for {name} (serial {}, valid until \
             {}); pass --force to replace it",
            id.prefix(),
            loaded.stored.meta.serial,
            inventory::format_time(loaded.stored.meta.not_after)
        ))),
        Some(RecordState::Broken { reason }) => Err(CliError::usage(format!(
            "{} holds a record that cannot be read ({reason}); pass --force to replace it",
            id.prefix()
        ))),
        Some(_) => Err(CliError::usage(format!(
            "{} holds a record this version does not know; pass --force to replace it",
            id.prefix()
        ))),
    }
}

/// Waits (up to [`LOCK_WAIT`]) for the issuance lock of the record name `name`.
async fn record_lock(
    opened: &certstore::Opened,
    id: &record::CertificateId,
) -> CliResult<LockGuard> {
    lock_named(opened, &id.issue_lock(), &id.name).await
}

async fn issue_lock(opened: &certstore::Opened, name: &str) -> CliResult<LockGuard> {
    lock_named(opened, &keys::issue_lock(name), name).await
}

async fn lock_named(
    opened: &certstore::Opened,
    lock_name: &str,
    name: &str,
) -> CliResult<LockGuard> {
    let locker: Arc<dyn Locker> = opened.store.clone();
    let options = LockOptions::default().with_timeout(LOCK_WAIT);
    cert_core::lock(locker, lock_name, &options)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_covered_by_an_exact_name_or_a_one_label_wildcard() {
        let names = vec!["shop.example".to_owned(), "*.Shop.Example".to_owned()];
        for yes in [
            "shop.example",
            "SHOP.example.",
            "www.shop.example",
            "*.shop.example",
        ] {
            assert!(covers(&names, yes), "{yes}");
        }
        for no in [
            "example",
            "other.example",
            "a.b.shop.example",
            ".shop.example",
            "xshop.example",
        ] {
            assert!(!covers(&names, no), "{no}");
        }
        assert!(covers(&["10.0.0.1".to_owned()], "10.0.0.1"));
        assert!(!covers(&["*.example".to_owned()], "*.example.org"));
    }

    #[test]
    fn a_chain_file_holds_certificates_only_and_not_too_many() {
        let path = Path::new("chain.pem");
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        check_chain_file(path, &cert.repeat(MAX_CHAIN_LENGTH)).unwrap();
        let err = check_chain_file(path, &cert.repeat(MAX_CHAIN_LENGTH + 1)).unwrap_err();
        assert!(err.message.contains("101 certificates"), "{err}");
        for label in [
            "PRIVATE KEY",
            "EC PRIVATE KEY",
            "RSA PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
        ] {
            let pem = format!("{cert}-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
            let err = check_chain_file(path, &pem).unwrap_err();
            assert_eq!(err.code, crate::output::USAGE);
            assert!(err.message.contains("holds a private key"), "{err}");
        }
    }

    #[test]
    fn inputs_are_read_up_to_a_mebibyte() {
        let dir = tempfile::tempdir().unwrap();
        let fits = dir.path().join("fits");
        std::fs::write(&fits, vec![b'a'; MAX_INPUT_BYTES as usize]).unwrap();
        assert_eq!(read_pem(&fits).unwrap().len(), MAX_INPUT_BYTES as usize);
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_INPUT_BYTES as usize + 1]).unwrap();
        assert!(
            read_pem(&big)
                .unwrap_err()
                .message
                .contains("larger than 1 MiB")
        );
        let err = read_pem(Path::new("/dev/zero")).unwrap_err();
        assert!(err.message.contains("larger than 1 MiB"), "{err}");
    }

    #[test]
    fn export_targets_that_are_links_are_refused_even_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("a.key");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = check_target(&link, true).unwrap_err();
        assert!(err.message.contains("symbolic link"), "{err}");
        let dangling = dir.path().join("b.key");
        std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).unwrap();
        assert!(check_target(&dangling, true).is_err());
        check_target(&dir.path().join("new.key"), false).unwrap();
        assert!(check_target(&target, false).is_err());
        check_target(&target, true).unwrap();
        // Writing replaces the file at the path, never what a link there points to.
        write_private(&link, b"secret").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "secret");
        assert!(
            !std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
