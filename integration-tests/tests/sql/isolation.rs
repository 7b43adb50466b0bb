//! SQLite isolation: namespaces and table prefixes share neither values nor locks, and
//! database files are private to their owner.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cert_core::{Locker, Storage};
use cert_sql::SqlConfig;

use crate::{drop_tables, open, sqlite_url};

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
