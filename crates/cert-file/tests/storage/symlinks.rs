//! Symbolic links pointing outside the root, as directories, files or the lock directory,
//! are refused and never followed.

use std::os::unix::fs::symlink;
use std::time::Duration;

use cert_core::{Error, Storage};
use cert_file::{FileError, FileStorage};

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
