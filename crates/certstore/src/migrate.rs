//! [`migrate`]: copy every key of one storage to another, verified and resumable; and
//! [`StorageIdentity`]: whether two storage URLs name the same keys.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cert_core::record;
use cert_core::{Error, LockGuard, LockOptions, Locker, Result, Store, keys, try_lock};
use futures::StreamExt;
use serde::Serialize;

use crate::{StorageUrl, Target};

/// The lock a migration holds on its source, so two migrations of one storage never run
/// at once.
pub const MIGRATE_LOCK: &str = "certstore/migrate";

/// How long [`migrate`] waits for the cleaning lock before it tells the progress callback
/// what it waits for: long enough that a lock taken and released at once goes unnoticed.
const WAIT_NOTICE: Duration = Duration::from_secs(1);

/// How long [`migrate`] waits for the cleaning lock: longer than its default time to
/// live, so a lock left by a process that died expires meanwhile.
pub const CLEAN_WAIT: Duration = Duration::from_secs(60);

/// How [`migrate`] runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// Copy only the keys below this prefix (`""`, the default, copies everything).
    pub prefix: String,
    /// Compare only: report what would be copied, write nothing, take no lock.
    pub dry_run: bool,
    /// Keys copied at once. Default 8.
    pub concurrency: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            prefix: String::new(),
            dry_run: false,
            concurrency: 8,
        }
    }
}

impl MigrateOptions {
    /// Copies only below `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Compares without writing.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Copies this many keys at once (at least 1).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }
}

/// Where a migration stands; passed to the progress callback and returned at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Keys found below the prefix in the source.
    pub total: usize,
    /// Keys handled so far.
    pub done: usize,
    /// Keys written to the destination and read back identical (in a dry run: keys that
    /// would be written).
    pub copied: usize,
    /// Keys the destination already held with identical bytes.
    pub skipped: usize,
    /// Keys deleted from the source while the migration ran.
    pub vanished: usize,
    /// Keys that could not be copied, with the reason.
    pub failed: Vec<(String, String)>,
    /// Before any copying: the lock on the source the run is waiting for (another process
    /// holds it), reported once after a second of waiting. `None` otherwise.
    pub waiting_for: Option<String>,
}

enum Outcome {
    Copied,
    Skipped,
    Vanished,
}

/// Copies every key below `options.prefix` from `from` to `to`.
///
/// - Records' bundles ([`record::is_bundle_key`]) are copied first, every other value
///   after them, so at every moment of a copy each record on the destination is whole:
///   a bundle with copies not yet copied is a complete record (its copies are only
///   copies), and no copy arrives without its bundle.
/// - Each value is written, then read back from `to` and compared byte for byte; a
///   mismatch is a failure of that key.
/// - Keys `to` already holds with identical bytes are skipped without writing, so an
///   interrupted migration resumes where it stopped when run again.
/// - Unless it is a dry run, it holds the lock [`MIGRATE_LOCK`] and the engine's
///   cleaning lock ([`keys::CLEAN_LOCK`]) on the source for its whole run, so a second
///   migration refuses to start and no engine cleans (deletes) certificates half way;
///   it stops with [`Error::LockLost`] if a lease is lost. While it waits for the cleaning
///   lock (up to a minute: a `clean` running, or a lock left by a process that died until
///   it expires), `progress` gets a report naming it in
///   [`waiting_for`](MigrateReport::waiting_for), once, after a second.
/// - A key that fails does not stop the others: failures are listed in the report.
///   Listing the source, or losing a lock, stops the run with an error.
///
/// Locks themselves are not copied: they belong to the processes holding them.
pub async fn migrate(
    from: Arc<dyn Store>,
    to: Arc<dyn Store>,
    options: &MigrateOptions,
    mut progress: impl FnMut(&MigrateReport) + Send,
) -> Result<MigrateReport> {
    cert_core::validate_prefix(&options.prefix)?;
    let guards = if options.dry_run {
        Vec::new()
    } else {
        take_locks(&from, &mut progress).await?
    };
    let result = run(&from, &to, options, &guards, &mut progress).await;
    for guard in guards {
        let _ = guard.release().await;
    }
    result
}

async fn take_locks(
    from: &Arc<dyn Store>,
    progress: &mut (impl FnMut(&MigrateReport) + Send),
) -> Result<Vec<LockGuard>> {
    let locker: Arc<dyn Locker> = from.clone();
    let options = LockOptions::default().with_ttl(Duration::from_secs(30));
    let Some(migrate) = try_lock(Arc::clone(&locker), MIGRATE_LOCK, &options).await? else {
        return Err(Error::Conflict {
            key: MIGRATE_LOCK.to_owned(),
            reason: "another migration of this storage is running (it holds the lock)".into(),
        });
    };
    let clean_options = options.clone().with_timeout(CLEAN_WAIT);
    let waiting = cert_core::lock(locker, keys::CLEAN_LOCK, &clean_options);
    tokio::pin!(waiting);
    // A silent wait of up to a minute looks like a hang: say what is awaited, once.
    let clean = tokio::select! {
        clean = &mut waiting => clean,
        () = tokio::time::sleep(WAIT_NOTICE) => {
            progress(&MigrateReport {
                waiting_for: Some(keys::CLEAN_LOCK.to_owned()),
                ..MigrateReport::default()
            });
            waiting.await
        }
    };
    match clean {
        Ok(clean) => Ok(vec![migrate, clean]),
        Err(err) => {
            let _ = migrate.release().await;
            Err(err)
        }
    }
}

async fn run(
    from: &Arc<dyn Store>,
    to: &Arc<dyn Store>,
    options: &MigrateOptions,
    guards: &[LockGuard],
    progress: &mut (impl FnMut(&MigrateReport) + Send),
) -> Result<MigrateReport> {
    let keys = from.list(&options.prefix, true).await?;
    let mut report = MigrateReport {
        total: keys.len(),
        ..MigrateReport::default()
    };
    progress(&report);
    let dry_run = options.dry_run;
    // Bundles (the records' commit points) are all copied before any other value, so the
    // destination never holds a record's copies without the bundle that commits them.
    let (bundles, rest): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|key| record::is_bundle_key(key));
    for phase in [bundles, rest] {
        let mut copies = futures::stream::iter(phase)
            .map(|key| async move {
                let outcome = copy_one(from.as_ref(), to.as_ref(), &key, dry_run).await;
                (key, outcome)
            })
            .buffer_unordered(options.concurrency.max(1));
        while let Some((key, outcome)) = copies.next().await {
            if let Some(lost) = guards.iter().find(|guard| guard.is_lost()) {
                return Err(Error::LockLost { name: lost.name() });
            }
            match outcome {
                Ok(Outcome::Copied) => report.copied += 1,
                Ok(Outcome::Skipped) => report.skipped += 1,
                Ok(Outcome::Vanished) => report.vanished += 1,
                Err(err) => report.failed.push((key, err.to_string())),
            }
            report.done += 1;
            progress(&report);
        }
    }
    report.failed.sort();
    Ok(report)
}

async fn copy_one(from: &dyn Store, to: &dyn Store, key: &str, dry_run: bool) -> Result<Outcome> {
    let value = match from.load(key).await {
        Ok(value) => value,
        Err(Error::NotFound { .. }) => return Ok(Outcome::Vanished),
        Err(err) => return Err(err),
    };
    match to.load(key).await {
        Ok(existing) if existing == value => return Ok(Outcome::Skipped),
        Ok(_) | Err(Error::NotFound { .. }) => {}
        Err(err) => return Err(err),
    }
    if dry_run {
        return Ok(Outcome::Copied);
    }
    to.store(key, &value).await?;
    let back = to.load(key).await?;
    if back != value {
        return Err(Error::corrupt(
            key,
            std::io::Error::other(format!(
                "read back {} bytes that differ from the {} bytes written",
                back.len(),
                value.len()
            )),
        ));
    }
    Ok(Outcome::Copied)
}

/// What a storage URL names, as far as the URL tells: two URLs with equal identities
/// reach the same keys, however they are spelled (`encrypted+` or not, a relative path or
/// a link to the directory, a password or a default port written or left out, driver
/// parameters). Host names are compared as written, except that every loopback name and
/// address counts as one.
///
/// ```
/// use certstore::StorageUrl;
/// use certstore::migrate::StorageIdentity;
///
/// let a = StorageUrl::parse("encrypted+redis://:pw@127.0.0.1/0?namespace=prod").unwrap();
/// let b = StorageUrl::parse("redis://localhost:6379?namespace=prod").unwrap();
/// assert_eq!(StorageIdentity::of(&a), StorageIdentity::of(&b));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageIdentity {
    /// A directory, canonicalized (its missing tail appended to its existing part).
    File {
        /// The directory.
        path: PathBuf,
    },
    /// A Redis database and a namespace in it.
    Redis {
        /// The server's host.
        host: String,
        /// The server's port.
        port: u16,
        /// The database number.
        db: i64,
        /// The namespace.
        namespace: String,
    },
    /// Tables in a PostgreSQL or MySQL database and a namespace in them.
    Sql {
        /// `postgres` or `mysql`.
        backend: &'static str,
        /// The server's host (or Unix socket path).
        host: String,
        /// The server's port.
        port: u16,
        /// The database.
        database: String,
        /// The table holding values (from the table prefix).
        table: String,
        /// The namespace.
        namespace: String,
    },
    /// Tables in an SQLite database file and a namespace in them.
    Sqlite {
        /// The database file, canonicalized.
        path: PathBuf,
        /// The table holding values.
        table: String,
        /// The namespace.
        namespace: String,
    },
    /// A prefix of an S3 bucket.
    S3 {
        /// The endpoint (`None`: AWS).
        endpoint: Option<String>,
        /// The bucket.
        bucket: String,
        /// The key prefix, without surrounding slashes.
        prefix: String,
    },
    /// A prefix of an Azure Blob Storage container.
    Azure {
        /// The account's blob endpoint.
        endpoint: String,
        /// The storage account.
        account: String,
        /// The container.
        container: String,
        /// The blob prefix, without surrounding slashes.
        prefix: String,
    },
    /// A URL whose parts cannot be read here (an in-memory SQLite database, a backend not
    /// compiled in): only the same URL text, redacted, is known to be the same storage.
    Other {
        /// The URL, redacted, without `encrypted+`.
        url: String,
    },
}

impl StorageIdentity {
    /// The identity of the storage `url` names. Reads the file system (to canonicalize
    /// paths) and nothing else.
    pub fn of(url: &StorageUrl) -> Self {
        let other = || StorageIdentity::Other {
            url: url
                .redacted()
                .trim_start_matches("encrypted+")
                .trim()
                .to_owned(),
        };
        match url.target() {
            Target::File { path } => StorageIdentity::File {
                path: canonical(path),
            },
            Target::Redis { url, namespace } => {
                redis_identity(url, namespace).unwrap_or_else(other)
            }
            Target::Sql {
                url,
                namespace,
                table_prefix,
            } => sql_identity(url, namespace, table_prefix.as_deref()).unwrap_or_else(other),
            Target::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => StorageIdentity::S3 {
                endpoint: endpoint.as_deref().map(normal_endpoint),
                bucket: bucket.clone(),
                prefix: prefix.trim_matches('/').to_owned(),
            },
            Target::Azure {
                account,
                container,
                prefix,
                endpoint,
            } => StorageIdentity::Azure {
                endpoint: normal_endpoint(
                    &endpoint
                        .clone()
                        .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net")),
                ),
                account: account.clone(),
                container: container.clone(),
                prefix: prefix.trim_matches('/').to_owned(),
            },
        }
    }
}

/// Whether `a` and `b` name the same storage (equal [`StorageIdentity`]).
pub fn same_storage(a: &StorageUrl, b: &StorageUrl) -> bool {
    StorageIdentity::of(a) == StorageIdentity::of(b)
}

/// `path` made absolute with links resolved; a missing tail (a directory a migration
/// creates) is appended to its longest existing ancestor, resolved.
fn canonical(path: &Path) -> PathBuf {
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let mut base = absolute.clone();
    let mut missing: Vec<OsString> = Vec::new();
    loop {
        if let Ok(mut real) = base.canonicalize() {
            for part in missing.iter().rev() {
                if part == ".." {
                    real.pop();
                } else if part != "." {
                    real.push(part);
                }
            }
            return real;
        }
        let Some(last) = base.components().next_back() else {
            return absolute;
        };
        missing.push(last.as_os_str().to_owned());
        if !base.pop() {
            return absolute;
        }
    }
}

/// A host as compared: lower case, without brackets or a final dot, and every loopback
/// name or address as `localhost`.
fn normal_host(host: &str) -> String {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        "localhost".to_owned()
    } else {
        host
    }
}

/// An endpoint URL as compared: lower case, without a final slash.
fn normal_endpoint(endpoint: &str) -> String {
    endpoint.trim_end_matches('/').to_ascii_lowercase()
}

fn redis_identity(url: &str, namespace: &str) -> Option<StorageIdentity> {
    let parsed = url::Url::parse(url).ok()?;
    let db = match parsed.path().trim_matches('/') {
        "" => 0,
        db => db.parse().ok()?,
    };
    Some(StorageIdentity::Redis {
        host: normal_host(parsed.host_str()?),
        port: parsed.port().unwrap_or(6379),
        db,
        namespace: namespace.to_owned(),
    })
}

#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(unused_variables)
)]
fn sql_identity(url: &str, namespace: &str, table_prefix: Option<&str>) -> Option<StorageIdentity> {
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    {
        use std::str::FromStr;
        // The table holding values, named as the storage names it.
        let mut config = cert_sql::SqlConfig::default();
        if let Some(prefix) = table_prefix {
            config = config.with_table_prefix(prefix);
        }
        let table = config.kv_table;
        let namespace = namespace.to_owned();
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => {
                let options = cert_sql::sqlx::postgres::PgConnectOptions::from_str(url).ok()?;
                let host = match options.get_socket() {
                    Some(socket) => canonical(socket).display().to_string(),
                    None => normal_host(options.get_host()),
                };
                // PostgreSQL's default database is the user's name.
                let database = options
                    .get_database()
                    .unwrap_or(options.get_username())
                    .to_owned();
                Some(StorageIdentity::Sql {
                    backend: "postgres",
                    host,
                    port: options.get_port(),
                    database,
                    table,
                    namespace,
                })
            }
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => {
                let options = cert_sql::sqlx::mysql::MySqlConnectOptions::from_str(url).ok()?;
                let host = match options.get_socket() {
                    Some(socket) => canonical(socket).display().to_string(),
                    None => normal_host(options.get_host()),
                };
                Some(StorageIdentity::Sql {
                    backend: "mysql",
                    host,
                    port: options.get_port(),
                    database: options.get_database().unwrap_or_default().to_owned(),
                    table,
                    namespace,
                })
            }
            #[cfg(feature = "sqlite")]
            "sqlite" => {
                // `None` for an in-memory database: no file to compare.
                let [path, ..] = cert_sql::sqlite_database_files(url)?;
                Some(StorageIdentity::Sqlite {
                    path: canonical(&path),
                    table,
                    namespace,
                })
            }
            _ => None,
        }
    }
    #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use cert_core::{MemoryStorage, Storage};

    #[tokio::test]
    async fn copies_verifies_and_resumes() {
        let from = MemoryStorage::new();
        let to = MemoryStorage::new();
        for n in 0..20 {
            from.store(&format!("k/{n:02}"), &[n; 3]).await.unwrap();
        }
        let (src, dst): (Arc<dyn Store>, Arc<dyn Store>) =
            (Arc::new(from.clone()), Arc::new(to.clone()));

        let dry = migrate(
            src.clone(),
            dst.clone(),
            &MigrateOptions::default().with_dry_run(true),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!((dry.total, dry.copied, dry.skipped), (20, 20, 0));
        assert!(to.is_empty(), "a dry run writes nothing");

        to.store("k/03", &[3; 3]).await.unwrap();
        to.store("k/04", b"stale").await.unwrap();
        let mut calls = 0;
        let report = migrate(src.clone(), dst.clone(), &MigrateOptions::default(), |_| {
            calls += 1
        })
        .await
        .unwrap();
        assert_eq!((report.copied, report.skipped), (19, 1));
        assert!(report.failed.is_empty());
        assert_eq!(calls, 21);
        assert_eq!(to.load("k/04").await.unwrap(), vec![4; 3]);

        let again = migrate(src.clone(), dst.clone(), &MigrateOptions::default(), |_| {})
            .await
            .unwrap();
        assert_eq!((again.copied, again.skipped), (0, 20));
    }

    #[tokio::test]
    async fn bundles_are_written_before_any_other_value() {
        let from = MemoryStorage::new();
        for name in ["a.example", "b.example"] {
            let stored = cert_core::testing::self_signed_certificate(
                &[name],
                "local",
                Duration::from_secs(86_400),
            )
            .unwrap();
            record::save_certificate(&from, name, &stored, None)
                .await
                .unwrap();
        }
        from.store("acme/account.json", b"{}").await.unwrap();
        let to = cert_core::testing::FaultyStorage::new(MemoryStorage::new());
        let report = migrate(
            Arc::new(from),
            Arc::new(to.clone()),
            &MigrateOptions::default().with_concurrency(4),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(report.copied, 9);
        let written = to.written_keys();
        assert_eq!(written.len(), 9);
        assert!(
            written[..2].iter().all(|key| record::is_bundle_key(key)),
            "{written:?}"
        );
        assert!(!written[2..].iter().any(|key| record::is_bundle_key(key)));
    }

    #[tokio::test]
    async fn a_second_migration_is_refused_while_one_holds_the_lock() {
        let from = MemoryStorage::new();
        from.store("a", b"1").await.unwrap();
        let src: Arc<dyn Store> = Arc::new(from.clone());
        let held = try_lock(src.clone(), MIGRATE_LOCK, &LockOptions::default())
            .await
            .unwrap()
            .unwrap();
        let err = migrate(
            src.clone(),
            Arc::new(MemoryStorage::new()),
            &MigrateOptions::default(),
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        held.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_wait_for_the_clean_lock_is_reported_once() {
        let from = MemoryStorage::new();
        from.store("a", b"1").await.unwrap();
        let src: Arc<dyn Store> = Arc::new(from);
        let held = try_lock(src.clone(), keys::CLEAN_LOCK, &LockOptions::default())
            .await
            .unwrap()
            .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let running = tokio::spawn({
            let (src, seen) = (src.clone(), seen.clone());
            async move {
                migrate(
                    src,
                    Arc::new(MemoryStorage::new()),
                    &MigrateOptions::default(),
                    move |p| seen.lock().unwrap().push(p.waiting_for.clone()),
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            seen.lock().unwrap().is_empty(),
            "nothing said before a second"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Some(keys::CLEAN_LOCK.to_owned())]
        );
        held.release().await.unwrap();
        let report = running.await.unwrap().unwrap();
        assert_eq!(report.copied, 1);
        let seen = seen.lock().unwrap();
        let waits = seen.iter().filter(|w| w.is_some()).count();
        assert_eq!(waits, 1, "{seen:?}");
        assert!(seen.last().unwrap().is_none());
    }

    fn identity(url: &str) -> StorageIdentity {
        StorageIdentity::of(&StorageUrl::parse(url).unwrap())
    }

    fn same(a: &str, b: &str) -> bool {
        same_storage(
            &StorageUrl::parse(a).unwrap(),
            &StorageUrl::parse(b).unwrap(),
        )
    }

    #[test]
    fn files_are_compared_by_their_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let plain = root.display().to_string();
        for other in [
            format!("encrypted+{plain}"),
            format!("{plain}/"),
            format!("{}/./store", dir.path().display()),
            format!("{}/x/../store", dir.path().display()),
            link.display().to_string(),
            format!("file://{}", link.display()),
        ] {
            assert!(same(&plain, &other), "{plain} vs {other}");
        }
        // A directory that does not exist yet: its existing ancestor is resolved.
        let new = format!("{}/new/sub", link.display());
        assert_eq!(
            identity(&new),
            StorageIdentity::File {
                path: root.canonicalize().unwrap().join("new/sub")
            }
        );
        assert!(!same(&plain, &format!("{plain}/sub")));
    }

    #[test]
    fn servers_are_compared_by_host_port_database_and_namespace() {
        assert!(same(
            "encrypted+redis://:pw@127.0.0.1/0?namespace=prod",
            "redis://localhost:6379?namespace=prod"
        ));
        assert!(same(
            "redis://h/0",
            "rediss://user:other@H:6379?namespace=certstore"
        ));
        assert!(!same("redis://h/0", "redis://h/1"));
        assert!(!same("redis://h", "redis://h:6380"));
        assert!(!same("redis://h", "redis://h?namespace=other"));
        assert!(!same("redis://h", "redis://g"));

        assert!(same(
            "postgres://u:a@db/certs?namespace=n",
            "encrypted+postgresql://v:b@DB:5432/certs?sslmode=require&namespace=n&table_prefix=certstore"
        ));
        assert!(!same("postgres://u@db/certs", "postgres://u@db/other"));
        assert!(!same("postgres://u@db/certs", "postgres://u@db:5433/certs"));
        assert!(!same("postgres://u@db/c", "postgres://u@db/c?namespace=n"));
        assert!(!same(
            "postgres://u@db/c",
            "postgres://u@db/c?table_prefix=tls"
        ));
        assert!(same("mysql://u@[::1]/c", "mariadb://u:p@localhost:3306/c"));
        assert!(!same("mysql://u@h/c", "postgres://u@h/c"));

        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db").display().to_string();
        assert!(same(
            &format!("sqlite://{db}"),
            &format!("encrypted+sqlite://{db}?mode=rwc")
        ));
        assert!(!same(
            &format!("sqlite://{db}"),
            &format!("sqlite://{db}?namespace=n")
        ));
    }

    #[test]
    fn buckets_and_containers_are_compared_by_prefix_and_endpoint() {
        assert!(same(
            "s3://b/p/?region=eu-west-1",
            "encrypted+s3://b/p?region=us-east-1&path_style=true"
        ));
        assert!(!same("s3://b/p", "s3://b/q"));
        assert!(!same("s3://b/p", "s3://c/p"));
        assert!(!same("s3://b/p", "s3://b/p?endpoint=http://127.0.0.1:9000"));
        assert!(same(
            "azblob://acct/c/p",
            "azblob://acct/c/p/?endpoint=https://ACCT.blob.core.windows.net/"
        ));
        assert!(!same("azblob://acct/c/p", "azblob://acct/d/p"));
        assert!(!same("azblob://acct/c/p", "azblob://other/c/p"));
    }
}
