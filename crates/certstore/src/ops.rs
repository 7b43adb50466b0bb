//! `migrate`, `rekey`, `locks`, `unlock`, `clean` and `doctor`: operating a storage.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cert_core::{Error, LockOptions, Locker, Storage, StorageExt, keys, try_lock};
use certstore::inventory;
use certstore::migrate::{MigrateOptions, MigrateReport, migrate};
use serde_json::json;

use crate::output::{
    CliError, CliResult, FAILED, human, now_unix, parse_duration, print_json, progress_bar, table,
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
}

pub async fn migrate_cmd(global: &Global, args: MigrateArgs) -> CliResult {
    let from = global.open(&args.from).await?;
    let to = global.open(&args.to).await?;
    if from.url.redacted() == to.url.redacted() {
        return Err(CliError::usage(
            "the source and the destination are the same storage",
        ));
    }
    let options = MigrateOptions::default()
        .with_prefix(args.prefix.trim_end_matches('/'))
        .with_dry_run(args.dry_run)
        .with_concurrency(args.concurrency);
    let bar = progress_bar(global.quiet, "copying");
    let started = Instant::now();
    let report = migrate(
        Arc::clone(&from.store),
        Arc::clone(&to.store),
        &options,
        |p: &MigrateReport| {
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
        eprintln!("failed: {key}: {}", crate::output::scrub(reason));
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
        println!("no locks held in {}", opened.description);
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
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(
                "refusing to remove a lock without confirmation: pass --yes",
            ));
        }
        eprint!(
            "remove lock {} held by {}? Its holder loses mutual exclusion. [y/N] ",
            held.name, held.token
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CliError::usage("not confirmed; nothing removed"));
        }
    }
    let removed = admin
        .force_release(&args.name)
        .await
        .map_err(|err| CliError::storage("cannot remove the lock", &err))?;
    if removed {
        println!("removed lock {}", args.name);
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
    for entry in &entries {
        let meta = store
            .load_opt(&entry.meta_key())
            .await
            .map_err(|err| CliError::storage("cannot read certificate metadata", &err))?
            .and_then(|bytes| serde_json::from_slice::<cert_core::CertificateMeta>(&bytes).ok());
        let not_after = match meta {
            Some(meta) => meta.not_after,
            None => match inventory::load(store.as_ref(), entry)
                .await
                .map_err(|err| CliError::storage("cannot read a certificate", &err))?
                .details
            {
                Ok(details) => details.not_after,
                Err(_) => continue, // unreadable: leave it for an operator
            },
        };
        if not_after >= cutoff {
            continue;
        }
        if !args.dry_run {
            match store.delete(&entry.prefix).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(err) => return Err(CliError::storage("cannot remove a certificate", &err)),
            }
        }
        removed += 1;
        println!(
            "{verb} {} (expired {})",
            entry.prefix,
            inventory::format_time(not_after)
        );
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
                    println!("{verb} expired lock {name}");
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

/// Arguments of `certstore doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    storage: StorageArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        }
    }
}

struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    hint: String,
}

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    hint: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        detail: crate::output::scrub(&detail.into()),
        hint: hint.into(),
    }
}

pub async fn doctor(global: &Global, args: DoctorArgs) -> CliResult {
    let mut checks = Vec::new();
    let opened = match global.open(&args.storage.storage).await {
        Ok(opened) => {
            checks.push(check(
                "connect",
                Status::Pass,
                opened.description.clone(),
                "",
            ));
            Some(opened)
        }
        Err(err) => {
            let hint = if err.code == FAILED {
                "start the server or fix its address, then run doctor again"
            } else {
                "fix the storage URL, credentials or key"
            };
            checks.push(check("connect", Status::Fail, err.message.clone(), hint));
            None
        }
    };
    if let Some(opened) = &opened {
        run_checks(opened, &mut checks).await;
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if args.json {
        let items: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| json!({"check": c.name, "status": c.status.name().to_ascii_lowercase(), "detail": c.detail, "hint": c.hint}))
            .collect();
        print_json(&json!({"ok": failed == 0, "checks": items}))?;
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                let detail = if c.hint.is_empty() {
                    c.detail.clone()
                } else {
                    format!("{}; hint: {}", c.detail, c.hint)
                };
                vec![c.name.to_owned(), c.status.name().to_owned(), detail]
            })
            .collect();
        print!("{}", table(&["CHECK", "RESULT", "DETAIL"], &rows));
    }
    if failed > 0 {
        return Err(CliError::failed(format!("{failed} checks failed")));
    }
    Ok(())
}

async fn run_checks(opened: &certstore::Opened, checks: &mut Vec<Check>) {
    let store = &opened.store;
    match store.list("", false).await {
        Ok(top) => checks.push(check(
            "list",
            Status::Pass,
            format!("{} top-level entries", top.len()),
            "",
        )),
        Err(err) => checks.push(check(
            "list",
            Status::Fail,
            err.to_string(),
            "check read and list permissions of the credentials",
        )),
    }
    if let Some(root) = &opened.file_root {
        checks.push(file_permissions(root));
    }

    let token = cert_core::LockToken::generate();
    let key = format!("certstore-doctor/{}", token.as_str());
    let value: Vec<u8> = (0..1024u32)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let before = SystemTime::now();
    let started = Instant::now();
    let round_trip = async {
        store.store(&key, &value).await?;
        let after = SystemTime::now();
        let loaded = store.load(&key).await?;
        if loaded != value {
            return Err(Error::corrupt(
                &key,
                std::io::Error::other("read back different bytes"),
            ));
        }
        let info = store.stat(&key).await?;
        store.delete(&key).await?;
        if store.load_opt(&key).await?.is_some() {
            return Err(Error::corrupt(
                &key,
                std::io::Error::other("still present after delete"),
            ));
        }
        Ok::<_, Error>((info, after))
    }
    .await;
    match round_trip {
        Ok((info, after)) => {
            checks.push(check(
                "round trip",
                Status::Pass,
                format!(
                    "store, load, stat and delete of 1 KiB in {} ms",
                    started.elapsed().as_millis()
                ),
                "",
            ));
            checks.push(clock_skew(opened, info.modified, before, after));
        }
        Err(err) => {
            let _ = store.delete(&key).await;
            checks.push(check(
                "round trip",
                Status::Fail,
                err.to_string(),
                "check write and delete permissions of the credentials",
            ));
        }
    }
    checks.push(lock_round_trip(opened, &format!("certstore-doctor/{}", token.as_str())).await);
    checks.push(encryption(opened).await);
}

fn file_permissions(root: &std::path::Path) -> Check {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(root) {
        Ok(meta) if !meta.is_dir() => check(
            "permissions",
            Status::Fail,
            format!("{} is not a directory", root.display()),
            "point the storage URL at a directory",
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 == 0 {
                check(
                    "permissions",
                    Status::Pass,
                    format!("{} is mode {mode:o}", root.display()),
                    "",
                )
            } else {
                check(
                    "permissions",
                    Status::Warn,
                    format!(
                        "{} is mode {mode:o}: others can read private keys",
                        root.display()
                    ),
                    format!("chmod 700 {}", root.display()),
                )
            }
        }
        Err(_) => check(
            "permissions",
            Status::Pass,
            format!(
                "{} does not exist yet; it is created with mode 700 on first write",
                root.display()
            ),
            "",
        ),
    }
}

fn clock_skew(
    opened: &certstore::Opened,
    modified: SystemTime,
    before: SystemTime,
    after: SystemTime,
) -> Check {
    use certstore::Backend;
    let measurable = matches!(
        opened.url.backend(),
        Backend::S3 | Backend::Azure | Backend::File
    );
    if !measurable {
        return check(
            "clock skew",
            Status::Skip,
            format!(
                "the {} backend stamps values with this host's clock; its locks expire by the server's clock",
                opened.url.backend()
            ),
            "",
        );
    }
    // Servers stamp whole seconds: allow for that and the request's duration.
    let slack = after.duration_since(before).unwrap_or_default() + Duration::from_secs(2);
    let (ahead, skew) = match modified.duration_since(after) {
        Ok(ahead) => (true, ahead),
        Err(_) => (false, before.duration_since(modified).unwrap_or_default()),
    };
    let skew = skew.saturating_sub(Duration::from_secs(1));
    let direction = if ahead { "ahead of" } else { "behind" };
    if skew <= slack {
        check(
            "clock skew",
            Status::Pass,
            format!(
                "the storage's clock is within {} of this host's",
                human(slack)
            ),
            "",
        )
    } else {
        check(
            "clock skew",
            Status::Warn,
            format!(
                "the storage's clock is about {} {direction} this host's",
                human(skew)
            ),
            "keep hosts on NTP; the file backend's lock tolerance must exceed the skew",
        )
    }
}

async fn lock_round_trip(opened: &certstore::Opened, name: &str) -> Check {
    let store = &opened.store;
    let ttl = Duration::from_secs(20);
    let started = Instant::now();
    let result = async {
        let Some(lease) = store.try_acquire(name, ttl).await? else {
            return Ok(Some("a fresh lock name was already held".to_owned()));
        };
        let second = store.try_acquire(name, ttl).await?;
        let excluded = second.is_none();
        if let Some(second) = second {
            let _ = store.release(&second).await;
        }
        let lease = store.refresh(&lease, ttl).await?;
        store.release(&lease).await?;
        let again = store.try_acquire(name, ttl).await?;
        let reacquired = again.is_some();
        if let Some(again) = again {
            store.release(&again).await?;
        }
        Ok::<_, Error>(match (excluded, reacquired) {
            (true, true) => None,
            (false, _) => Some("a second acquisition succeeded while the lock was held".to_owned()),
            (_, false) => Some("the lock could not be taken again after release".to_owned()),
        })
    }
    .await;
    match result {
        Ok(None) => check(
            "lock",
            Status::Pass,
            format!(
                "acquire, exclusion, refresh and release in {} ms",
                started.elapsed().as_millis()
            ),
            "",
        ),
        Ok(Some(problem)) => check(
            "lock",
            Status::Fail,
            problem,
            "the backend does not provide mutual exclusion; do not share it between nodes",
        ),
        Err(err) => check(
            "lock",
            Status::Fail,
            err.to_string(),
            "check the credentials allow writing lock entries",
        ),
    }
}

#[cfg(feature = "encrypted")]
async fn encryption(opened: &certstore::Opened) -> Check {
    use std::collections::BTreeMap;
    const SAMPLE: usize = 200;
    let Some(encrypted) = &opened.encrypted else {
        return check(
            "encryption",
            Status::Skip,
            "values are stored unencrypted",
            "use an encrypted+ URL to seal them",
        );
    };
    let keys = match opened.store.list("", true).await {
        Ok(keys) => keys,
        Err(err) => return check("encryption", Status::Fail, err.to_string(), ""),
    };
    let current = encrypted.ring().current_id();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut unopened = Vec::new();
    let sample: Vec<&String> = keys.iter().take(SAMPLE).collect();
    for key in &sample {
        match encrypted.inner().load(key).await {
            Ok(raw) => {
                let id = cert_encrypted::KeyRing::sealed_by(&raw)
                    .map_or_else(|| "plain".to_owned(), |id| id.to_string());
                *by_key.entry(id).or_default() += 1;
            }
            Err(Error::NotFound { .. }) => continue,
            Err(err) => return check("encryption", Status::Fail, err.to_string(), ""),
        }
        match opened.store.load(key).await {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(_) => unopened.push((*key).clone()),
        }
    }
    let ids: Vec<String> = by_key.iter().map(|(id, n)| format!("{id}: {n}")).collect();
    if sample.is_empty() {
        return check(
            "encryption",
            Status::Pass,
            "key loaded; no values stored yet",
            "",
        );
    }
    if !unopened.is_empty() {
        return check(
            "encryption",
            Status::Fail,
            format!(
                "{} of {} sampled values do not open (first: {}); sealed by {}",
                unopened.len(),
                sample.len(),
                unopened[0],
                ids.join(", ")
            ),
            format!(
                "set {} to the key that sealed them, or add it to {} during a rotation",
                certstore::KEY_ENV,
                certstore::PREVIOUS_KEYS_ENV
            ),
        );
    }
    let current = current.to_string();
    if by_key.keys().any(|id| *id != current) {
        return check(
            "encryption",
            Status::Warn,
            format!(
                "{} sampled values open; sealed by {}",
                sample.len(),
                ids.join(", ")
            ),
            format!("run `certstore rekey` to re-seal everything under the current key {current}"),
        );
    }
    check(
        "encryption",
        Status::Pass,
        format!(
            "{} sampled values open with the current key {current}",
            sample.len()
        ),
        "",
    )
}

#[cfg(not(feature = "encrypted"))]
async fn encryption(_opened: &certstore::Opened) -> Check {
    check(
        "encryption",
        Status::Skip,
        "this build has no encryption support",
        "",
    )
}
