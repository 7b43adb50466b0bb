//! Unit tests of [`StorageIdentity`]: files, servers, buckets and containers.

use super::*;

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
