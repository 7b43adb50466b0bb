//! The SQL backend against real servers: the conformance suite on PostgreSQL, MariaDB and
//! SQLite, migrations racing from many tasks and processes, SQLite isolation, connection
//! errors, and a private PostgreSQL server stopped and restarted under a live
//! `SqlStorage`. This file holds the conformance suites, the migration race and the
//! helpers the test modules share.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cert_core::Storage;
use cert_sql::sqlx::{self, AssertSqlSafe};
use cert_sql::{Dialect, SqlConfig, SqlStorage};

mod connect;
mod isolation;
mod outage;

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
