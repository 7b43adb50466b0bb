//! Temporary files left by writers: never listed, never in the way, and cleaned once old.

use std::path::Path;
use std::time::Duration;

use cert_core::{Error, Storage};
use cert_file::FileStorage;

#[tokio::test]
async fn temporary_files_are_never_listed_and_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = FileStorage::new(&root);
    s.store("a/b", b"v").await.unwrap();
    // What a writer killed half way leaves behind.
    std::fs::write(root.join("a/.certstore-tmp-0123456789abcdef"), b"partial").unwrap();
    std::fs::write(root.join(".certstore-tmp-00000000000000ff"), b"partial").unwrap();
    std::fs::create_dir(root.join(".certstore-del-0000000000000001")).unwrap();
    std::fs::write(root.join(".certstore-del-0000000000000001/x"), b"x").unwrap();
    assert_eq!(s.list("", true).await.unwrap(), ["a/b"]);
    assert_eq!(s.list("", false).await.unwrap(), ["a"]);
    assert_eq!(s.list("a", false).await.unwrap(), ["a/b"]);
    // A directory holding only a temporary file is no prefix.
    std::fs::create_dir(root.join("ghost")).unwrap();
    std::fs::write(root.join("ghost/.certstore-tmp-1"), b"partial").unwrap();
    assert!(!s.exists("ghost").await.unwrap());
    assert_eq!(s.list("", false).await.unwrap(), ["a"]);
    // Young leftovers stay (a writer may still be busy); old ones go.
    assert_eq!(s.clean_up(Duration::from_secs(3600)).await.unwrap(), 0);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(s.clean_up(Duration::from_millis(1)).await.unwrap(), 4);
    assert!(!root.join("a/.certstore-tmp-0123456789abcdef").exists());
    assert!(!root.join(".certstore-del-0000000000000001").exists());
    assert_eq!(s.load("a/b").await.unwrap(), b"v");
}

/// Creates a temporary file named as a writer names it, holding half a value, last
/// modified `age` ago: what a writer killed (SIGKILL, power loss) between creating its
/// temporary file and renaming it leaves behind.
fn leftover(dir: &Path, age: Duration) -> std::path::PathBuf {
    let path = dir.join(format!(".certstore-tmp-{:016x}", fastrand::u64(..)));
    let file = std::fs::File::create_new(&path).unwrap();
    std::io::Write::write_all(&mut &file, b"-----BEGIN CERT").unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
    path
}

#[tokio::test]
async fn a_writer_killed_mid_write_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = FileStorage::new(&root);
    s.store("certs/a.crt", b"old").await.unwrap();
    leftover(&root.join("certs"), Duration::ZERO);
    // The first write below a new prefix: its directory holds nothing but the temp file.
    std::fs::create_dir(root.join("fresh")).unwrap();
    leftover(&root.join("fresh"), Duration::ZERO);

    assert_eq!(s.load("certs/a.crt").await.unwrap(), b"old");
    assert_eq!(s.list("", true).await.unwrap(), ["certs/a.crt"]);
    assert_eq!(s.list("", false).await.unwrap(), ["certs"]);
    assert_eq!(s.list("certs", false).await.unwrap(), ["certs/a.crt"]);
    assert!(s.list("fresh", true).await.unwrap().is_empty());
    assert!(!s.exists("fresh").await.unwrap());
    assert!(matches!(s.stat("fresh").await, Err(Error::NotFound { .. })));
    assert!(matches!(
        s.delete("fresh").await,
        Err(Error::NotFound { .. })
    ));
    assert!(!s.stat("certs").await.unwrap().is_terminal);

    // Neither keeps a write or a delete from working.
    s.store("fresh/b.crt", b"b").await.unwrap();
    assert_eq!(s.list("fresh", false).await.unwrap(), ["fresh/b.crt"]);
    s.delete("fresh").await.unwrap();
    assert!(!s.exists("fresh").await.unwrap());
    s.delete("certs/a.crt").await.unwrap();
    assert!(s.list("", true).await.unwrap().is_empty());
    // `certs` still holds the temp file, yet is no prefix, and a value may replace it.
    assert!(root.join("certs").is_dir());
    assert!(!s.exists("certs").await.unwrap());
    s.store("certs", b"a value now").await.unwrap();
    assert_eq!(s.load("certs").await.unwrap(), b"a value now");
    assert_eq!(s.list("", true).await.unwrap(), ["certs"]);
}

#[tokio::test]
async fn lock_cleaning_removes_stale_temporary_files_and_spares_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = FileStorage::new(&root);
    s.store("a/b/c", b"v").await.unwrap();
    let lease = cert_core::Locker::try_acquire(&s, "issue/x", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let stale_age = cert_file::LEFTOVER_GRACE + Duration::from_secs(60);
    let stale = [
        leftover(&root.join("a/b"), stale_age),
        leftover(&root, stale_age),
        leftover(&root.join(".certstore-locks/issue"), stale_age),
    ];
    std::fs::create_dir(root.join("ghost")).unwrap();
    let ghost = leftover(&root.join("ghost"), stale_age);
    // A writer still busy: its temporary file is young.
    let busy = leftover(&root.join("a/b"), Duration::from_secs(5));
    assert_eq!(s.list("", true).await.unwrap(), ["a/b/c"]);
    assert_eq!(s.list("", false).await.unwrap(), ["a"]);

    // No lock had expired: the count is of locks only.
    assert_eq!(cert_core::Locker::clean_expired_locks(&s).await.unwrap(), 0);
    for path in stale.iter().chain([&ghost]) {
        assert!(!path.exists(), "{} was not removed", path.display());
    }
    assert!(
        busy.exists(),
        "the temporary file of a busy writer was removed"
    );
    assert_eq!(s.load("a/b/c").await.unwrap(), b"v");
    cert_core::Locker::refresh(&s, &lease, Duration::from_secs(60))
        .await
        .unwrap();
    // Once the busy writer's file is as old, it goes too.
    std::fs::File::options()
        .write(true)
        .open(&busy)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - stale_age)
        .unwrap();
    assert_eq!(cert_core::Locker::clean_expired_locks(&s).await.unwrap(), 0);
    assert!(!busy.exists());
    assert_eq!(s.list("", true).await.unwrap(), ["a/b/c"]);
}
