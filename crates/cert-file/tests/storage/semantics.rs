//! The file backend answers as memory storage does: round trips, invalid keys, hierarchy
//! conflicts, pruned parents, leftover directories, concurrent stores and deletes, and
//! random operations on both backends.

use cert_core::{Error, MemoryStorage, Storage};
use cert_file::FileStorage;

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
