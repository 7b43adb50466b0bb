//! The SQL backend against real servers: the conformance suite on PostgreSQL, MariaDB and
//! SQLite, migrations racing from many tasks and processes, and a private PostgreSQL
//! server stopped and restarted under a live `SqlStorage`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cert_core::{Error, Locker, Storage};
use cert_sql::sqlx::{self, AssertSqlSafe};
use cert_sql::{Dialect, SqlConfig, SqlStorage};

const POSTGRES_VAR: &str = "CERTSTORE_TEST_POSTGRES_URL";
const MYSQL_VAR: &str = "CERTSTORE_TEST_MYSQL_URL";

/// Set in child processes of the migration race: `<url>|<table prefix>`.
const MIGRATE_CHILD: &str = "CERTSTORE_SQL_MIGRATE_CHILD";

/// Tables the conformance suites share, one namespace per case.
const SUITE_TABLES: &str = "certstore_conformance";

fn suite_config(ns: String) -> SqlConfig {
    SqlConfig::default()
        .with_table_prefix(SUITE_TABLES)
        .with_namespace(ns)
        .with_max_connections(6)
}

async fn open(url: &str, config: SqlConfig) -> SqlStorage {
    match SqlStorage::connect_with(url, config).await {
        Ok(storage) => storage,
        Err(err) => panic!("cannot open {url}: {err:?}"),
    }
}

/// A SQLite database file for `name` that child processes of this test binary find too.
/// Files left by earlier runs (a case's file outlives its case, which only deletes its
/// keys) are removed once they are an hour old.
fn sqlite_path(name: &str) -> PathBuf {
    static PRUNE: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cert-sql");
    std::fs::create_dir_all(&dir).unwrap();
    PRUNE.call_once(|| {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| {
                    modified.elapsed().unwrap_or_default() > Duration::from_secs(3600)
                });
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    });
    dir.join(format!("{name}.db"))
}

fn sqlite_url(name: &str) -> String {
    format!("sqlite://{}", sqlite_path(name).display())
}

mod postgres {
    use cert_conformance::conformance_tests;

    conformance_tests! {
        open: |ns: String| async move {
            let url = integration_tests::service_url(super::POSTGRES_VAR).unwrap();
            super::open(&url, super::suite_config(ns)).await
        },
        enabled: || integration_tests::service_url(super::POSTGRES_VAR).is_some(),
    }

    #[test]
    fn concurrent_migrations() {
        if let Some(url) = integration_tests::service_url(super::POSTGRES_VAR) {
            super::migration_race("postgres::concurrent_migrations", &url);
        }
    }
}

mod mysql {
    use cert_conformance::conformance_tests;

    conformance_tests! {
        open: |ns: String| async move {
            let url = integration_tests::service_url(super::MYSQL_VAR).unwrap();
            super::open(&url, super::suite_config(ns)).await
        },
        enabled: || integration_tests::service_url(super::MYSQL_VAR).is_some(),
    }

    #[test]
    fn concurrent_migrations() {
        if let Some(url) = integration_tests::service_url(super::MYSQL_VAR) {
            super::migration_race("mysql::concurrent_migrations", &url);
        }
    }
}

mod sqlite {
    use cert_conformance::conformance_tests;

    conformance_tests! {
        // One database file per case, named by its namespace, so the cross-process case's
        // children open the same file.
        open: |ns: String| async move {
            let url = super::sqlite_url(&format!("conformance_{ns}"));
            super::open(&url, super::suite_config(ns)).await
        },
    }

    #[test]
    fn concurrent_migrations() {
        let url = super::sqlite_url(&integration_tests::unique_name("migrations"));
        super::migration_race("sqlite::concurrent_migrations", &url);
    }
}

/// Opens a fresh table prefix from 8 tasks and 3 child processes at once: every one must
/// succeed, the schema must be recorded exactly once, and the tables must work.
fn migration_race(test_name: &str, url: &str) {
    if let Ok(child) = std::env::var(MIGRATE_CHILD) {
        let (child_url, prefix) = child.split_once('|').unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let storage = open(child_url, SqlConfig::default().with_table_prefix(prefix)).await;
            storage.store("child", b"ok").await.unwrap();
        });
        println!("migration child done");
        return;
    }
    let prefix = integration_tests::unique_name("mig");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&exe)
                .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
                .env(MIGRATE_CHILD, format!("{url}|{prefix}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let url = url.to_owned();
                let prefix = prefix.clone();
                tokio::spawn(async move {
                    let config = SqlConfig::default()
                        .with_table_prefix(&prefix)
                        .with_namespace(format!("task{i}"))
                        .with_max_connections(2);
                    let storage = open(&url, config).await;
                    storage.store("k", b"v").await.unwrap();
                    storage
                })
            })
            .collect();
        let mut stores = Vec::new();
        for task in tasks {
            stores.push(task.await.unwrap());
        }
        for child in children {
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("migration child done"),
                "child failed: {}\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for storage in &stores {
            assert_eq!(storage.load("k").await.unwrap(), b"v");
        }
        let main = open(url, SqlConfig::default().with_table_prefix(&prefix)).await;
        assert_eq!(main.load("child").await.unwrap(), b"ok");
        // Every task wrote in its own namespace; the children shared the default one.
        assert_eq!(main.list("", true).await.unwrap(), ["child"]);
        let (recorded, versions) = schema_rows(url, &prefix).await;
        assert_eq!(recorded, 1, "schema version recorded {recorded} times");
        assert_eq!(versions, 1);
        drop_tables(url, &prefix).await;
    });
}

/// (rows, distinct versions) of the migrations table of `prefix`.
async fn schema_rows(url: &str, prefix: &str) -> (i64, i64) {
    let sql = format!("SELECT COUNT(*), COUNT(DISTINCT version) FROM {prefix}_kv_migrations");
    match Dialect::from_url(url).unwrap() {
        Dialect::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query_as(AssertSqlSafe(sql))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        Dialect::MySql => {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            sqlx::query_as(AssertSqlSafe(sql))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        _ => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query_as(AssertSqlSafe(sql))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}

async fn drop_tables(url: &str, prefix: &str) {
    let tables = [
        format!("{prefix}_kv"),
        format!("{prefix}_locks"),
        format!("{prefix}_kv_migrations"),
    ];
    match Dialect::from_url(url).unwrap() {
        Dialect::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            for table in tables {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
        Dialect::MySql => {
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            for table in tables {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
        _ => {
            let path = url.trim_start_matches("sqlite://").to_owned();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
}

#[tokio::test]
async fn sqlite_namespaces_and_tables_are_isolated() {
    let url = sqlite_url(&integration_tests::unique_name("isolation"));
    let a = open(&url, SqlConfig::default().with_namespace("a")).await;
    let b = open(&url, SqlConfig::default().with_namespace("b")).await;
    let other = open(&url, SqlConfig::default().with_table_prefix("other")).await;
    a.store("x/%/_", b"a").await.unwrap();
    assert!(!b.exists("x").await.unwrap());
    assert!(other.list("", true).await.unwrap().is_empty());
    b.store("x/%/_", b"b").await.unwrap();
    assert_eq!(a.load("x/%/_").await.unwrap(), b"a");
    // A lock in one namespace does not block the same name in another.
    let ttl = Duration::from_secs(30);
    assert!(a.try_acquire("l", ttl).await.unwrap().is_some());
    assert!(b.try_acquire("l", ttl).await.unwrap().is_some());
    assert!(a.try_acquire("l", ttl).await.unwrap().is_none());
    // `%` and `_` match only themselves: no LIKE anywhere.
    a.store("x/ab/c", b"1").await.unwrap();
    assert_eq!(a.list("x", false).await.unwrap(), ["x/%", "x/ab"]);
    a.delete("x/%").await.unwrap();
    assert_eq!(a.list("x", true).await.unwrap(), ["x/ab/c"]);
    drop_tables(&url, "certstore").await;
}

/// A database created by `SqlStorage` and its `-wal` and `-shm` files are private to
/// their owner whatever the umask; a database file that exists keeps its mode, and
/// SQLite gives the companions that same mode. The directory is never changed.
#[tokio::test]
async fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let files = |db: &Path| {
        ["", "-wal", "-shm"].map(|suffix| PathBuf::from(format!("{}{suffix}", db.display())))
    };
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("shared");
    std::fs::create_dir(&parent).unwrap();
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o755)).unwrap();

    let fresh = parent.join("fresh.db");
    let storage = open(
        &format!("sqlite://{}", fresh.display()),
        SqlConfig::default(),
    )
    .await;
    storage.store("k", b"private key").await.unwrap();
    for file in files(&fresh) {
        // In WAL mode both companions exist while a connection is open.
        assert!(file.exists(), "{} is missing", file.display());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&parent), 0o755, "the directory's mode changed");

    // An operator chose 0640 for an existing (empty, hence new) database file.
    let shared = parent.join("shared.db");
    std::fs::File::create_new(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
    let storage = open(
        &format!("sqlite://{}", shared.display()),
        SqlConfig::default(),
    )
    .await;
    storage.store("k", b"v").await.unwrap();
    for file in files(&shared) {
        assert_eq!(mode(&file), 0o640, "{}", file.display());
    }
}

#[tokio::test]
async fn unsafe_table_names_are_refused_before_connecting() {
    for prefix in ["kv; DROP TABLE users", "1kv", "k\"v", &"p".repeat(60)] {
        let config = SqlConfig::default().with_table_prefix(prefix);
        // The port is closed: the refusal must come from the check, not the network.
        let result = SqlStorage::connect_with("postgres://u@127.0.0.1:1/db", config).await;
        match result {
            Err(Error::Backend { backend, source }) => {
                assert_eq!(backend, "postgres");
                assert!(source.to_string().contains("table name"), "{source}");
            }
            other => panic!("{prefix:?}: expected a configuration error, got {other:?}"),
        }
    }
    let refused = SqlStorage::connect("redis://127.0.0.1/").await;
    assert!(matches!(
        refused,
        Err(Error::Backend { backend: "sql", .. })
    ));
}

#[tokio::test]
async fn unreachable_server_is_unavailable_quickly() {
    let config = SqlConfig::default().with_acquire_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let result = SqlStorage::connect_with("postgres://postgres@127.0.0.1:1/test", config).await;
    match result {
        Err(
            err @ Error::Unavailable {
                backend: "postgres",
                ..
            },
        ) => assert!(err.is_retryable()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// A PostgreSQL cluster of this test's own, run as the `postgres` user on a free port and
/// stopped (immediately) when dropped.
struct PrivatePostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    const BIN: &str = "/usr/lib/postgresql/15/bin";

    /// `None` (after saying why) when PostgreSQL's binaries or root rights are missing.
    fn create() -> Option<Self> {
        let bin = PathBuf::from(Self::BIN);
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        if !bin.join("initdb").exists() || !bin.join("pg_ctl").exists() || !is_root {
            let why = format!(
                "the private PostgreSQL fault test needs {} and root (to run it as the \
                 postgres user)",
                Self::BIN
            );
            assert!(!integration_tests::services_required(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("certstore-pg-")
            .tempdir()
            .unwrap();
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres { bin, dir, port };
        pg.run(&format!(
            "{}/initdb -D {}/data -A trust -U postgres --no-sync > {}/initdb.log 2>&1",
            pg.bin.display(),
            pg.dir.path().display(),
            pg.dir.path().display()
        ));
        pg.start();
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, script: &str) {
        let status = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", script])
            .status()
            .unwrap();
        assert!(status.success(), "failed: {script}");
    }

    fn pg_ctl(&self, args: &str) -> String {
        format!(
            "{}/pg_ctl -D {}/data -l {}/server.log {args}",
            self.bin.display(),
            self.dir.path().display(),
            self.dir.path().display()
        )
    }

    fn start(&self) {
        self.run(&self.pg_ctl(&format!(
            "-w -t 60 -o '-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off' start",
            self.port,
            self.dir.path().display()
        )));
    }

    fn stop(&self) {
        self.run(&self.pg_ctl("-w -t 60 -m fast stop"));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args([
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                &self.pg_ctl("-w -m immediate stop"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: cert_core::Result<T>) {
    match result {
        Err(
            err @ Error::Unavailable {
                backend: "postgres",
                ..
            },
        ) => {
            assert!(err.is_retryable());
            assert!(
                std::error::Error::source(&err).is_some(),
                "{what}: no source"
            );
        }
        other => panic!("{what}: expected Unavailable from postgres, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_postgres_stopped_and_restarted() {
    let Some(pg) = tokio::task::spawn_blocking(PrivatePostgres::create)
        .await
        .unwrap()
    else {
        return;
    };
    let config = SqlConfig::default()
        .with_max_connections(4)
        .with_acquire_timeout(Duration::from_secs(2))
        .with_operation_timeout(Some(Duration::from_secs(5)));
    let storage = std::sync::Arc::new(open(&pg.url(), config).await);
    storage.store("before/stop", b"kept").await.unwrap();
    let lease = storage
        .try_acquire("held", Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();

    // A writer keeps going until the server disappears under it.
    let writer = {
        let storage = std::sync::Arc::clone(&storage);
        tokio::spawn(async move {
            for i in 0u64.. {
                if let Err(err) = storage.store(&format!("run/{i}"), b"x").await {
                    return (i, err);
                }
            }
            unreachable!()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| pg.stop());
    let stopped = Instant::now();
    let (written, err) = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the writer hung after the server stopped")
        .unwrap();
    assert!(written > 0, "nothing was written before the stop");
    assert_unavailable("store during the stop", Err::<(), _>(err));

    // Every operation fails fast and retryably while the server is down.
    // Each waits at most for the pool's acquire timeout (2 s) trying to reconnect.
    let limit = Duration::from_secs(6);
    for _ in 0..2 {
        let timed = Instant::now();
        assert_unavailable("load", storage.load("before/stop").await);
        assert!(
            timed.elapsed() < limit,
            "load failed after {:?}",
            timed.elapsed()
        );
        let timed = Instant::now();
        assert_unavailable("store", storage.store("k", b"v").await);
        assert!(
            timed.elapsed() < limit,
            "store failed after {:?}",
            timed.elapsed()
        );
        let timed = Instant::now();
        assert_unavailable("list", storage.list("run", true).await);
        assert!(
            timed.elapsed() < limit,
            "list failed after {:?}",
            timed.elapsed()
        );
        let timed = Instant::now();
        assert_unavailable(
            "try_acquire",
            storage.try_acquire("l", Duration::from_secs(5)).await,
        );
        assert!(
            timed.elapsed() < limit,
            "try_acquire failed after {:?}",
            timed.elapsed()
        );
        let timed = Instant::now();
        assert_unavailable(
            "refresh",
            storage.refresh(&lease, Duration::from_secs(600)).await,
        );
        assert!(
            timed.elapsed() < limit,
            "refresh failed after {:?}",
            timed.elapsed()
        );
    }
    eprintln!("server down for {:?}", stopped.elapsed());

    // The same value recovers once the server is back.
    tokio::task::block_in_place(|| pg.start());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match storage.load("before/stop").await {
            Ok(value) => {
                assert_eq!(value, b"kept");
                break;
            }
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no recovery after restart: {err:?}"),
        }
    }
    storage.store("after/restart", b"ok").await.unwrap();
    assert_eq!(storage.load("after/restart").await.unwrap(), b"ok");
    // The lease taken before the outage is still the holder's.
    let renewed = storage
        .refresh(&lease, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        storage
            .try_acquire("held", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none()
    );
    storage.release(&renewed).await.unwrap();
    assert!(
        storage
            .try_acquire("held", Duration::from_secs(5))
            .await
            .unwrap()
            .is_some()
    );
    // Every write reported as done is there; the one cut off may or may not have
    // committed before the server went away.
    let kept = storage.list("run", true).await.unwrap().len() as u64;
    assert!(
        kept == written || kept == written + 1,
        "{written} writes succeeded but {kept} are stored"
    );
}
