//! Tests of the SQLite file handling: which URLs name files, their companions and modes.

use super::*;

#[test]
fn only_plain_database_files_are_created_ahead() {
    for url in [
        "sqlite:///var/lib/certstore.db",
        "sqlite://certstore.db?mode=rwc",
        "sqlite:certstore.db?cache=shared",
    ] {
        assert!(on_disk(url), "{url}");
    }
    for url in [
        "sqlite::memory:",
        "sqlite://:memory:",
        "sqlite://?mode=memory",
        "sqlite://a.db?mode=memory&cache=private",
        "sqlite://a.db?mode=ro",
        "sqlite://a.db?immutable=1",
        "sqlite://a.db?vfs=memdb",
    ] {
        assert!(!on_disk(url), "{url}");
    }
}

#[test]
fn companions_are_named_after_the_database() {
    assert_eq!(
        companions(Path::new("/d/c.db")),
        [PathBuf::from("/d/c.db-wal"), PathBuf::from("/d/c.db-shm")]
    );
    assert_eq!(
        database_files("sqlite:///d/a%20b.db?mode=rwc"),
        Some(["/d/a b.db", "/d/a b.db-wal", "/d/a b.db-shm"].map(PathBuf::from))
    );
    assert_eq!(database_files("sqlite::memory:"), None);
    assert_eq!(database_files("sqlite://a.db?vfs=memdb"), None);
    // A database opened read-only is not created, but is a file all the same.
    assert!(database_files("sqlite://a.db?mode=ro").is_some());
}

#[test]
fn companions_lose_what_the_database_does_not_grant() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    create_private(&db);
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let [wal, shm] = companions(&db);
    std::fs::write(&wal, b"").unwrap();
    std::fs::set_permissions(&wal, Permissions::from_mode(0o644)).unwrap();
    restrict_companions(&db);
    assert_eq!(
        std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!shm.exists(), "a missing companion is not created");
    // An existing database file keeps its mode.
    std::fs::set_permissions(&db, Permissions::from_mode(0o640)).unwrap();
    create_private(&db);
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o640
    );
}
