//! Permissions: directories and files private to their owner, and an existing root
//! keeping its mode.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cert_core::Storage;
use cert_file::FileStorage;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
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
