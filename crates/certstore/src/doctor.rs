//! `certstore doctor`: checks a storage end to end, its certificate records included.

use std::time::{Duration, Instant, SystemTime};

use cert_core::record::{self, Layout};
use cert_core::{Error, Storage, StorageExt};
use certstore::inventory;
use serde_json::json;

use crate::Global;
use crate::StorageArg;
use crate::output::{CliError, CliResult, FAILED, human, print_json, table};

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
    if let Some(tls) = database_tls(&opened.url) {
        checks.push(tls);
    }
    #[cfg(feature = "sqlite")]
    if let certstore::Target::Sql { url, .. } = opened.url.target()
        && opened.url.backend() == certstore::Backend::Sqlite
        && let Some(files) = cert_sql::sqlite_database_files(url)
    {
        checks.push(sqlite_permissions(&files));
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
    certificates(opened, checks).await;
}

/// Every certificate record: one failure per broken record (with the reason), one warning
/// per bundle whose copies hold something else, else one line that all is well.
async fn certificates(opened: &certstore::Opened, checks: &mut Vec<Check>) {
    const NAME: &str = "certificates";
    let store = opened.store.as_ref();
    let entries = match inventory::scan(store).await {
        Ok(entries) => entries,
        Err(err) => {
            checks.push(check(NAME, Status::Fail, err.to_string(), ""));
            return;
        }
    };
    let (mut old_layout, mut problems) = (0, 0);
    for entry in &entries {
        let found = match inventory::load(store, entry).await {
            Ok(found) => found,
            Err(err) => {
                checks.push(check(
                    NAME,
                    Status::Fail,
                    format!("{}: {err}", entry.id),
                    "",
                ));
                problems += 1;
                continue;
            }
        };
        let id = &entry.id;
        let Some((certificate, _)) = found.valid() else {
            problems += 1;
            checks.push(check(
                NAME,
                Status::Fail,
                format!("{id} is broken: {}", found.broken().unwrap_or_default()),
                format!(
                    "a server managing the name issues it again; or remove it with \
                     `certstore rm {} --issuer {}`",
                    id.name, id.issuer
                ),
            ));
            continue;
        };
        if certificate.layout != Layout::Bundle {
            old_layout += 1;
            continue;
        }
        match record::copies_current(store, id, &certificate.stored).await {
            Ok(true) => {}
            Ok(false) => {
                problems += 1;
                checks.push(check(
                    NAME,
                    Status::Warn,
                    format!(
                        "{id}: the copies beside {} are stale (servers use the bundle)",
                        id.bundle_key()
                    ),
                    "the next renewal rewrites them; tools reading the .crt/.key copies see an older certificate until then",
                ));
            }
            Err(err) => {
                problems += 1;
                checks.push(check(NAME, Status::Fail, format!("{id}: {err}"), ""));
            }
        }
    }
    if problems == 0 {
        let mut detail = format!("{} records load", entries.len());
        if old_layout > 0 {
            detail.push_str(&format!(
                ", {old_layout} in the layout of older releases (a bundle is added at the next save)"
            ));
        }
        checks.push(check(NAME, Status::Pass, detail, ""));
    }
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

/// The SQLite database file and its `-wal` and `-shm` companions (those that exist) must
/// not be open to group or others: they hold private keys, and the `-wal` file holds
/// recent writes in full.
#[cfg(feature = "sqlite")]
fn sqlite_permissions(files: &[std::path::PathBuf]) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut seen = Vec::new();
    for file in files {
        let Ok(meta) = std::fs::metadata(file) else {
            continue; // a companion exists only while the database is in use
        };
        let mode = meta.permissions().mode() & 0o777;
        seen.push(format!("{} is mode {mode:o}", file.display()));
        if mode & 0o077 != 0 {
            open.push((file, mode));
        }
    }
    if open.is_empty() {
        return check("permissions", Status::Pass, seen.join(", "), "");
    }
    let detail: Vec<String> = open
        .iter()
        .map(|(file, mode)| format!("{} is mode {mode:o}", file.display()))
        .collect();
    let paths: Vec<String> = open
        .iter()
        .map(|(file, _)| file.display().to_string())
        .collect();
    check(
        "permissions",
        Status::Warn,
        format!("{}: others can read private keys", detail.join(", ")),
        format!("chmod 600 {}", paths.join(" ")),
    )
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

/// Whether the connection to a PostgreSQL, MySQL or Redis server on another machine is
/// TLS with the server's certificate verified; `None` for other backends.
///
/// Passwords and certificates cross the network in the clear without TLS, and TLS
/// without verification gives way to anyone on the path. Loopback hosts and Unix sockets
/// pass: nothing leaves the machine. Only the URL is read (`sslmode` / `ssl-mode` and the
/// scheme), not driver defaults from the environment.
fn database_tls(url: &certstore::StorageUrl) -> Option<Check> {
    use certstore::{Backend, Target};
    const NAME: &str = "database tls";
    let backend = url.backend();
    if !matches!(backend, Backend::Postgres | Backend::MySql | Backend::Redis) {
        return None;
    }
    let hosts = url.hosts();
    let remote: Vec<&String> = hosts.iter().filter(|h| !is_loopback(h)).collect();
    if remote.is_empty() {
        return Some(check(
            NAME,
            Status::Pass,
            "loopback or local socket: nothing crosses the network",
            "",
        ));
    }
    let param = |names: &[&str]| {
        url.driver_params()
            .into_iter()
            .rev()
            .find(|(name, _)| names.contains(&name.to_ascii_lowercase().as_str()))
            .map(|(_, value)| value)
    };
    let (verified, shown, hint) = match backend {
        Backend::Postgres => {
            let mode = param(&["sslmode", "ssl-mode"]);
            let verified = mode.as_deref().is_some_and(|m| {
                m.eq_ignore_ascii_case("verify-full") || m.eq_ignore_ascii_case("verify-ca")
            });
            (
                verified,
                format!("sslmode={}", mode.as_deref().unwrap_or("(not set: prefer)")),
                "add sslmode=verify-full (and sslrootcert=<CA file> if the server's CA is private)",
            )
        }
        Backend::MySql => {
            let mode = param(&["ssl-mode", "sslmode", "ssl_mode"]);
            let verified = mode.as_deref().is_some_and(|m| {
                m.eq_ignore_ascii_case("verify_identity") || m.eq_ignore_ascii_case("verify_ca")
            });
            (
                verified,
                format!(
                    "ssl-mode={}",
                    mode.as_deref().unwrap_or("(not set: preferred)")
                ),
                "add ssl-mode=VERIFY_IDENTITY (and ssl-ca=<CA file> if the server's CA is private)",
            )
        }
        _ => {
            let Target::Redis { url: driver, .. } = url.target() else {
                return None;
            };
            let tls = driver
                .get(..9)
                .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"));
            // `#insecure` makes the Redis client skip certificate verification. The
            // password in the driver URL is percent-encoded, so a `#` is a fragment.
            let insecure = driver
                .split_once('#')
                .is_some_and(|(_, fragment)| fragment.eq_ignore_ascii_case("insecure"));
            let shown = match (tls, insecure) {
                (false, _) => "redis:// (no TLS)",
                (true, true) => "rediss:// with #insecure (certificate not verified)",
                (true, false) => "rediss://",
            };
            (
                tls && !insecure,
                shown.to_owned(),
                "use rediss:// (without #insecure) so the server's certificate is verified",
            )
        }
    };
    let hosts: Vec<&str> = remote.iter().map(|h| h.as_str()).collect();
    Some(if verified {
        check(
            NAME,
            Status::Pass,
            format!("verified TLS to {} ({shown})", hosts.join(", ")),
            "",
        )
    } else {
        check(
            NAME,
            Status::Warn,
            format!(
                "{backend} connection to {} is not verified TLS ({shown})",
                hosts.join(", ")
            ),
            hint,
        )
    })
}

/// Whether `host` names this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        // A Unix socket directory given as the host (`%2Frun%2Fpostgresql`).
        || host.starts_with('/')
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

#[cfg(test)]
#[cfg(feature = "sqlite")]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &std::path::Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn sqlite_files_open_to_others_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let files = cert_sql::sqlite_database_files(&url).unwrap();
        std::fs::write(&files[0], b"").unwrap();
        chmod(&files[0], 0o600);
        let private = sqlite_permissions(&files);
        assert_eq!(private.status, Status::Pass, "{}", private.detail);
        assert!(
            private.detail.ends_with("c.db is mode 600"),
            "{}",
            private.detail
        );

        // SQLite left a -wal file readable by everyone.
        std::fs::write(&files[1], b"").unwrap();
        chmod(&files[1], 0o644);
        let open = sqlite_permissions(&files);
        assert_eq!(open.status, Status::Warn, "{}", open.detail);
        assert!(
            open.detail.contains("c.db-wal is mode 644"),
            "{}",
            open.detail
        );
        assert!(!open.detail.contains("c.db is mode"), "{}", open.detail);
        assert_eq!(open.hint, format!("chmod 600 {}", files[1].display()));

        chmod(&files[0], 0o640);
        assert!(sqlite_permissions(&files).hint.contains("c.db "));
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    fn status(url: &str) -> Option<(Status, String)> {
        let url = certstore::StorageUrl::parse(url).unwrap();
        database_tls(&url).map(|c| (c.status, c.detail))
    }

    #[test]
    fn unverified_database_connections_are_reported() {
        for url in [
            "postgres://app:pw@db.internal/certs",
            "postgres://app:pw@db.internal/certs?sslmode=require",
            "postgresql://app:pw@10.0.0.5/certs?sslmode=prefer",
            "postgres://app:pw@localhost,db2.internal/certs?sslmode=disable",
            "mysql://root:pw@db.internal/certs",
            "mysql://root:pw@db.internal/certs?ssl-mode=REQUIRED",
            "mariadb://root:pw@db.internal/certs?ssl-mode=preferred",
            "redis://:pw@cache.internal:6379/0",
            "rediss://:pw@cache.internal:6380/0#insecure",
            "encrypted+redis://:p/w#x@cache.internal/0",
        ] {
            let (status, detail) = status(url).unwrap();
            assert_eq!(status, Status::Warn, "{url}: {detail}");
            assert!(detail.contains("not verified TLS"), "{url}: {detail}");
            assert!(!detail.contains("pw"), "{url}: {detail}");
        }
    }

    #[test]
    fn verified_or_local_connections_pass() {
        for url in [
            "postgres://app:pw@db.internal/certs?sslmode=verify-full",
            "postgres://app:pw@db.internal/certs?sslmode=verify-ca&namespace=n",
            "mysql://root:pw@db.internal/certs?ssl-mode=VERIFY_IDENTITY",
            "mysql://root:pw@db.internal/certs?ssl-mode=verify_ca",
            "rediss://:pw@cache.internal:6380/0",
            "redis://:pw@127.0.0.1:6379/0",
            "redis://localhost",
            "postgres://app:pw@[::1]:5432/certs",
            "mysql://root:pw@127.0.0.2/certs",
            "postgres://app@%2Frun%2Fpostgresql/certs",
        ] {
            let (status, detail) = status(url).unwrap();
            assert_eq!(status, Status::Pass, "{url}: {detail}");
        }
        for url in ["sqlite:///tmp/x.db", "/var/lib/certstore", "s3://bucket"] {
            assert!(status(url).is_none(), "{url}");
        }
    }
}
