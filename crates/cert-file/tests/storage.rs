//! Storage behaviour of the file backend: memory-equivalent semantics, permissions,
//! symbolic-link refusal and invisible temporary files.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use cert_core::{Error, MemoryStorage, Storage};
use cert_file::{FileError, FileStorage};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

fn is_symlink_refusal(result: &cert_core::Result<impl std::fmt::Debug>) -> bool {
    match result {
        Err(Error::Backend { backend, source }) => {
            *backend == "file"
                && matches!(
                    source.downcast_ref::<FileError>(),
                    Some(FileError::Symlink { .. })
                )
        }
        _ => false,
    }
}

#[tokio::test]
async fn round_trip_and_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::new(dir.path().join("root"));
    assert!(matches!(s.load("a/b").await, Err(Error::NotFound { .. })));
    assert!(matches!(s.stat("a").await, Err(Error::NotFound { .. })));
    assert!(matches!(s.delete("a").await, Err(Error::NotFound { .. })));
    assert!(!s.exists("a").await.unwrap());
    assert!(s.list("", true).await.unwrap().is_empty());
    s.store("a/b", b"one").await.unwrap();
    assert_eq!(s.load("a/b").await.unwrap(), b"one");
    s.store("a/b", b"").await.unwrap();
    assert_eq!(s.load("a/b").await.unwrap(), b"");
    let info = s.stat("a/b").await.unwrap();
    assert!(info.is_terminal && info.size == 0);
    let info = s.stat("a").await.unwrap();
    assert!(!info.is_terminal && info.key == "a");
    // A prefix is not a value.
    assert!(matches!(s.load("a").await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn invalid_keys_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::new(dir.path().join("root"));
    for key in [
        "",
        "/a",
        "a/",
        "../x",
        "a/../../x",
        "a//b",
        ".certstore-locks/x",
        "a\\b",
    ] {
        assert!(
            matches!(s.store(key, b"x").await, Err(Error::InvalidKey { .. })),
            "{key:?}"
        );
        assert!(matches!(s.load(key).await, Err(Error::InvalidKey { .. })));
        assert!(matches!(s.delete(key).await, Err(Error::InvalidKey { .. })));
    }
    assert!(!dir.path().join("root").exists());
    assert!(!dir.path().join("x").exists());
    let big = vec![0u8; cert_core::MAX_VALUE_LEN + 1];
    assert!(matches!(
        s.store("big", &big).await,
        Err(Error::TooLarge { .. })
    ));
}

#[tokio::test]
async fn permissions_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fresh/root");
    let s = FileStorage::new(&root);
    s.store("certificates/example.com/example.com.key", b"secret")
        .await
        .unwrap();
    s.store("top", b"x").await.unwrap();
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&dir.path().join("fresh")), 0o700);
    assert_eq!(mode(&root.join("certificates")), 0o700);
    assert_eq!(mode(&root.join("certificates/example.com")), 0o700);
    assert_eq!(
        mode(&root.join("certificates/example.com/example.com.key")),
        0o600
    );
    assert_eq!(mode(&root.join("top")), 0o600);
    // Overwriting keeps the mode (a new file replaces the old one).
    s.store("top", b"y").await.unwrap();
    assert_eq!(mode(&root.join("top")), 0o600);
    let guard = cert_core::try_lock(
        std::sync::Arc::new(s.clone()),
        "issue/example.com",
        &cert_core::LockOptions::default(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(mode(&root.join(".certstore-locks")), 0o700);
    assert_eq!(mode(&root.join(".certstore-locks/issue")), 0o700);
    assert_eq!(
        mode(&root.join(".certstore-locks/issue/example.com.lock")),
        0o600
    );
    guard.release().await.unwrap();
}

#[tokio::test]
async fn existing_root_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let s = FileStorage::new(dir.path());
    s.store("k", b"v").await.unwrap();
    assert_eq!(mode(dir.path()), 0o750);
}

#[tokio::test]
async fn symlinked_directory_pointing_outside_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"outside secret").unwrap();
    let root = dir.path().join("root");
    let s = FileStorage::new(&root);
    s.store("ok/value", b"v").await.unwrap();
    symlink(&outside, root.join("evil")).unwrap();

    assert!(is_symlink_refusal(&s.load("evil/secret").await));
    assert!(is_symlink_refusal(&s.exists("evil/secret").await));
    assert!(is_symlink_refusal(&s.stat("evil/secret").await));
    assert!(is_symlink_refusal(&s.store("evil/planted", b"x").await));
    assert!(is_symlink_refusal(&s.delete("evil/secret").await));
    assert!(is_symlink_refusal(&s.list("evil", true).await));
    assert!(is_symlink_refusal(&s.exists("evil").await));
    assert!(is_symlink_refusal(&s.delete("evil").await));
    // Never followed: nothing was written or removed outside.
    assert!(!outside.join("planted").exists());
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"outside secret"
    );
    // Listings skip the link.
    assert_eq!(s.list("", false).await.unwrap(), ["ok"]);
    assert_eq!(s.list("", true).await.unwrap(), ["ok/value"]);
    // The error message names the path.
    let err = s.load("evil/secret").await.unwrap_err();
    assert!(err.to_string().contains("file"), "{err}");
    let Error::Backend { source, .. } = err else {
        unreachable!()
    };
    assert!(source.to_string().contains("evil"), "{source}");
    // Deleting a prefix whose tree contains a link removes the link, not its target.
    symlink(&outside, root.join("ok/inner")).unwrap();
    s.delete("ok").await.unwrap();
    assert_eq!(
        std::fs::read(outside.join("secret")).unwrap(),
        b"outside secret"
    );
}

#[tokio::test]
async fn symlinked_file_pointing_outside_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, b"outside secret").unwrap();
    let root = dir.path().join("root");
    let s = FileStorage::new(&root);
    s.store("certs/real", b"v").await.unwrap();
    symlink(&outside, root.join("certs/link")).unwrap();

    assert!(is_symlink_refusal(&s.load("certs/link").await));
    assert!(is_symlink_refusal(&s.exists("certs/link").await));
    assert!(is_symlink_refusal(&s.stat("certs/link").await));
    assert!(is_symlink_refusal(
        &s.store("certs/link", b"overwrite").await
    ));
    assert!(is_symlink_refusal(&s.delete("certs/link").await));
    assert_eq!(std::fs::read(&outside).unwrap(), b"outside secret");
    assert_eq!(s.list("certs", false).await.unwrap(), ["certs/real"]);
    assert_eq!(s.list("", true).await.unwrap(), ["certs/real"]);
}

#[tokio::test]
async fn symlinked_lock_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    symlink(&outside, root.join(".certstore-locks")).unwrap();
    let s = FileStorage::new(&root);
    let result = cert_core::Locker::try_acquire(&s, "x", Duration::from_secs(5)).await;
    assert!(is_symlink_refusal(&result), "{result:?}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

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

#[tokio::test]
async fn hierarchy_conflicts_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::new(dir.path());
    s.store("a/b", b"1").await.unwrap();
    assert!(matches!(
        s.store("a", b"2").await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        s.store("a/b/c", b"3").await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(s.load("a/b").await.unwrap(), b"1");
    assert_eq!(s.list("", true).await.unwrap(), ["a/b"]);
}

#[tokio::test]
async fn delete_prunes_empty_parents() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = FileStorage::new(&root);
    s.store("a/b/c/d", b"1").await.unwrap();
    s.store("a/x", b"2").await.unwrap();
    s.delete("a/b/c/d").await.unwrap();
    assert!(!root.join("a/b").exists());
    assert!(root.join("a").is_dir());
    assert!(!s.exists("a/b").await.unwrap());
    assert_eq!(s.list("a", false).await.unwrap(), ["a/x"]);
    s.delete("a").await.unwrap();
    assert!(!root.join("a").exists());
    assert!(root.is_dir(), "the root itself is never pruned");
    // Now a value may go where the prefix was.
    s.store("a", b"3").await.unwrap();
    assert_eq!(s.load("a").await.unwrap(), b"3");
}

#[tokio::test]
async fn an_empty_leftover_directory_is_no_prefix_and_no_obstacle() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = FileStorage::new(&root);
    s.store("keep", b"k").await.unwrap();
    std::fs::create_dir_all(root.join("empty/deeper")).unwrap();
    assert!(!s.exists("empty").await.unwrap());
    assert!(matches!(s.stat("empty").await, Err(Error::NotFound { .. })));
    assert!(matches!(
        s.delete("empty").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(s.list("", false).await.unwrap(), ["keep"]);
    std::fs::remove_dir(root.join("empty/deeper")).unwrap();
    s.store("empty", b"now a value").await.unwrap();
    assert_eq!(s.load("empty").await.unwrap(), b"now a value");
}

#[tokio::test]
async fn concurrent_stores_and_deletes_of_one_tree_never_fail_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::new(dir.path()).with_durable_writes(false);
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                s.store(&format!("t/{writer}/k{}", i % 3), b"v")
                    .await
                    .unwrap();
            }
        }));
    }
    let deleter = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                let target = if i % 2 == 0 {
                    "t".to_owned()
                } else {
                    format!("t/{}", i % 4)
                };
                match s.delete(&target).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(err) => panic!("delete {target}: {err}"),
                }
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    deleter.await.unwrap();
    // Whatever survived is consistent: every listed key loads.
    for key in s.list("", true).await.unwrap() {
        assert_eq!(s.load(&key).await.unwrap(), b"v");
    }
}

/// Random operations on both backends give the same answers.
#[tokio::test]
async fn behaves_like_memory_storage() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileStorage::new(dir.path().join("r")).with_durable_writes(false);
    let memory = MemoryStorage::new();
    let keys = [
        "a", "a/b", "a/b/c", "a/c", "ab", "ab/c", "b/x/y/z", "b/x", "b", "c/d",
    ];
    let prefixes = ["", "a", "a/b", "ab", "b", "b/x", "c", "zz"];
    let mut rng = fastrand::Rng::with_seed(7);
    for step in 0..3000 {
        let key = keys[rng.usize(..keys.len())];
        let value = vec![b'0' + rng.u8(..10); rng.usize(..64)];
        let op = rng.u8(..6);
        let same = match op {
            0 | 1 => {
                outcome(file.store(key, &value).await) == outcome(memory.store(key, &value).await)
            }
            2 => outcome(file.delete(key).await) == outcome(memory.delete(key).await),
            3 => outcome(file.load(key).await) == outcome(memory.load(key).await),
            4 => outcome(file.exists(key).await) == outcome(memory.exists(key).await),
            _ => {
                let prefix = prefixes[rng.usize(..prefixes.len())];
                let recursive = rng.bool();
                outcome(file.list(prefix, recursive).await)
                    == outcome(memory.list(prefix, recursive).await)
            }
        };
        assert!(same, "step {step}: op {op} on {key:?} differs");
        let a = file.stat(key).await.map(|i| (i.size, i.is_terminal));
        let b = memory.stat(key).await.map(|i| (i.size, i.is_terminal));
        assert_eq!(outcome(a), outcome(b), "stat {key} at step {step}");
    }
}

fn outcome<T: std::fmt::Debug>(result: cert_core::Result<T>) -> String {
    match result {
        Ok(value) => format!("ok {value:?}"),
        Err(Error::NotFound { key }) => format!("not found {key}"),
        Err(Error::Conflict { key, .. }) => format!("conflict {key}"),
        Err(err) => format!("error {err}"),
    }
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
