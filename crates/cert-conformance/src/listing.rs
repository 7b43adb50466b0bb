//! Cases about listing and deleting prefixes, and keys with unusual characters.

use futures::stream::{self, StreamExt};

use crate::Fixture;
use crate::support::{assert_sorted_unique, assert_value, everything, not_found, ok, sorted};

/// Non-recursive listing gives the direct children (each sub-prefix once), recursive
/// listing every key below; both sorted bytewise.
pub async fn list_children_and_recursive(fixture: &Fixture) {
    let s = fixture.store().await;
    let keys = [
        "ls/a", "ls/b/c", "ls/b/d/e", "ls/b/d/f", "ls/b-x", "ls/B", "ls/Z", "ls/c.d", "ls/z/y",
    ];
    for key in keys {
        ok(
            s.store(key, key.as_bytes()).await,
            format_args!("store {key}"),
        );
    }
    let children = ok(s.list("ls", false).await, "list ls");
    assert_eq!(
        children,
        sorted(&["ls/B", "ls/Z", "ls/a", "ls/b", "ls/b-x", "ls/c.d", "ls/z"]),
        "non-recursive list of ls"
    );
    assert_sorted_unique(&children, "non-recursive list");
    let all = ok(s.list("ls", true).await, "list ls recursively");
    assert_eq!(all, sorted(&keys), "recursive list of ls");
    assert_sorted_unique(&all, "recursive list");
    assert_eq!(
        ok(s.list("ls/b", false).await, "list ls/b"),
        vec!["ls/b/c".to_owned(), "ls/b/d".to_owned()]
    );
    assert_eq!(
        ok(s.list("ls/b", true).await, "list ls/b recursively"),
        vec![
            "ls/b/c".to_owned(),
            "ls/b/d/e".to_owned(),
            "ls/b/d/f".to_owned()
        ]
    );
    assert_eq!(
        ok(s.list("ls/b/d", false).await, "list ls/b/d"),
        vec!["ls/b/d/e".to_owned(), "ls/b/d/f".to_owned()]
    );
}

/// A prefix is matched by whole segments: `a` is not a prefix of `ab/c`, `a-b` or `a.b`.
pub async fn list_matches_whole_segments(fixture: &Fixture) {
    let s = fixture.store().await;
    for key in [
        "w/a/x", "w/a/y/z", "w/ab/c", "w/a-b/d", "w/a.b", "w/a0", "w/b",
    ] {
        ok(s.store(key, b"v").await, format_args!("store {key}"));
    }
    assert_eq!(
        ok(s.list("w/a", false).await, "list w/a"),
        vec!["w/a/x".to_owned(), "w/a/y".to_owned()]
    );
    assert_eq!(
        ok(s.list("w/a", true).await, "list w/a recursively"),
        vec!["w/a/x".to_owned(), "w/a/y/z".to_owned()]
    );
    assert!(ok(s.list("w/a/x", false).await, "list below a value").is_empty());
    assert!(ok(s.list("w/a/x", true).await, "list below a value").is_empty());
    assert!(ok(s.list("w/a/y/z", true).await, "list below a value").is_empty());
    assert_eq!(
        ok(s.list("w", false).await, "list w"),
        sorted(&["w/a", "w/ab", "w/a-b", "w/a.b", "w/a0", "w/b"])
    );
}

/// `""` lists from the root: top-level entries, or every key when recursive.
pub async fn list_root(fixture: &Fixture) {
    let s = fixture.store().await;
    assert!(
        everything(&*s).await.is_empty(),
        "a fresh namespace must be empty"
    );
    assert!(ok(s.list("", false).await, "list root").is_empty());
    for key in ["r1", "r2/x", "r3/y/z", "r3/y/w"] {
        ok(s.store(key, b"v").await, format_args!("store {key}"));
    }
    assert_eq!(
        ok(s.list("", false).await, "list root"),
        vec!["r1".to_owned(), "r2".to_owned(), "r3".to_owned()]
    );
    assert_eq!(
        everything(&*s).await,
        sorted(&["r1", "r2/x", "r3/y/w", "r3/y/z"])
    );
}

/// Listing a prefix nothing is stored under gives an empty list, not an error.
pub async fn list_absent_prefix_is_empty(fixture: &Fixture) {
    let s = fixture.store().await;
    ok(s.store("present/key", b"v").await, "store");
    for prefix in [
        "absent",
        "absent/deeper",
        "present/key/below",
        "present/ke",
        "pres",
    ] {
        for recursive in [false, true] {
            let listed = ok(
                s.list(prefix, recursive).await,
                format_args!("list {prefix:?} recursive={recursive}"),
            );
            assert!(
                listed.is_empty(),
                "list {prefix:?} recursive={recursive}: expected nothing, got {listed:?}"
            );
        }
    }
}

/// Keys with characters that are special to SQL `LIKE`, glob patterns, URLs or shells
/// (`%`, `_`, `*`, `?`, `[`, spaces, quotes) and non-ASCII text are stored, listed,
/// matched and deleted literally.
pub async fn special_characters_in_keys(fixture: &Fixture) {
    let s = fixture.store().await;
    let keys = [
        "sp/100%",
        "sp/%",
        "sp/a%b",
        "sp/_",
        "sp/a_b",
        "sp/*",
        "sp/a*b",
        "sp/?",
        "sp/[ab]",
        "sp/with space",
        "sp/ tab-less leading space",
        "sp/quote'\"`",
        "sp/#hash&amp;=+;,",
        "sp/ünïcödé",
        "sp/日本語",
        "sp/emoji 🔐",
        "sp/.hidden",
        "sp/..dots",
        "sp/~tilde$HOME",
        "sp/a:b@c!",
    ];
    for key in keys {
        ok(
            s.store(key, key.as_bytes()).await,
            format_args!("store {key:?}"),
        );
    }
    for key in keys {
        assert_value(s.load(key).await, key, key.as_bytes());
        assert!(ok(s.exists(key).await, key), "{key:?} must exist");
        assert_eq!(ok(s.stat(key).await, key).size, key.len() as u64);
    }
    assert_eq!(ok(s.list("sp", false).await, "list sp"), sorted(&keys));
    assert_eq!(
        ok(s.list("sp", true).await, "list sp recursively"),
        sorted(&keys)
    );

    // Wildcards in a prefix must match only themselves.
    let pairs = [
        ("sq/a_", "sq/ab"),
        ("sq/a%", "sq/abc"),
        ("sq/a*", "sq/abcd"),
        ("sq/a?", "sq/ax"),
        ("sq/[xy]", "sq/x"),
    ];
    for (literal, lookalike) in pairs {
        ok(s.store(&format!("{literal}/k"), b"1").await, literal);
        ok(s.store(&format!("{lookalike}/k"), b"2").await, lookalike);
    }
    for (literal, lookalike) in pairs {
        assert_eq!(
            ok(s.list(literal, true).await, literal),
            vec![format!("{literal}/k")],
            "list {literal:?} must not match {lookalike:?}"
        );
        assert_eq!(
            ok(s.list(literal, false).await, literal),
            vec![format!("{literal}/k")],
            "list {literal:?} must not match {lookalike:?}"
        );
    }
    ok(s.delete("sq/a%").await, "delete sq/a%");
    ok(s.delete("sq/a_").await, "delete sq/a_");
    ok(s.delete("sq/a*").await, "delete sq/a*");
    for lookalike in ["sq/ab/k", "sq/abc/k", "sq/abcd/k", "sq/ax/k", "sq/x/k"] {
        assert_value(s.load(lookalike).await, lookalike, b"2");
    }
    not_found(s.load("sq/a%/k").await, "load after delete");
    assert_eq!(
        ok(s.list("sq", false).await, "list sq"),
        sorted(&[
            "sq/a?", "sq/[xy]", "sq/ab", "sq/abc", "sq/abcd", "sq/ax", "sq/x"
        ])
    );
}

/// [`Capabilities::list_keys`](crate::Capabilities::list_keys) keys under one prefix are
/// listed completely and in order, recursively or not, and nothing beside the prefix
/// leaks in.
pub async fn list_many_keys(fixture: &Fixture) {
    let s = fixture.store().await;
    let count = fixture.capabilities().list_keys;
    let keys: Vec<String> = (0..count).map(|i| format!("many/k{i:07}")).collect();
    let extra = ["many/sub/x", "many-beside", "manyx/y", "many0/z"];
    let writes = keys.iter().map(String::as_str).chain(extra).map(|key| {
        let s = &s;
        async move { (key, s.store(key, key.as_bytes()).await) }
    });
    let mut results = stream::iter(writes).buffer_unordered(32);
    while let Some((key, result)) = results.next().await {
        ok(result, format_args!("store {key}"));
    }
    drop(results);
    let mut want: Vec<String> = keys.clone();
    want.push("many/sub".to_owned());
    want.sort_unstable();
    let listed = ok(s.list("many", false).await, "list many");
    assert_eq!(listed.len(), count + 1, "number of direct children of many");
    assert!(
        listed == want,
        "list many: keys missing, extra or out of order"
    );
    let mut want: Vec<String> = keys;
    want.push("many/sub/x".to_owned());
    want.sort_unstable();
    let listed = ok(s.list("many", true).await, "list many recursively");
    assert_eq!(listed.len(), count + 1, "number of keys below many");
    assert!(
        listed == want,
        "list many recursively: keys missing, extra or out of order"
    );
}

/// Deleting a prefix removes everything below it and nothing beside it (`a-b`, `ab/c`
/// survive deleting `a`); deleting it again is [`NotFound`](cert_core::Error::NotFound).
pub async fn delete_prefix_recursively(fixture: &Fixture) {
    let s = fixture.store().await;
    let doomed = ["d/a/1", "d/a/2/3", "d/a/2/4/5"];
    let kept = ["d/ab/4", "d/a-b", "d/a.b/c", "d/b", "d0"];
    for key in doomed.iter().chain(&kept) {
        ok(s.store(key, b"v").await, format_args!("store {key}"));
    }
    ok(s.delete("d/a").await, "delete d/a");
    for key in doomed {
        not_found(
            s.load(key).await,
            format_args!("load {key} after deleting d/a"),
        );
    }
    assert!(!ok(s.exists("d/a").await, "exists d/a"), "d/a must be gone");
    assert!(
        !ok(s.exists("d/a/2").await, "exists d/a/2"),
        "d/a/2 must be gone"
    );
    not_found(s.stat("d/a").await, "stat d/a after delete");
    for key in kept {
        assert_value(s.load(key).await, key, b"v");
    }
    assert_eq!(everything(&*s).await, sorted(&kept));
    not_found(s.delete("d/a").await, "deleting d/a again");
    ok(s.delete("d/b").await, "delete a single key");
    not_found(s.load("d/b").await, "load d/b after delete");
    ok(s.delete("d").await, "delete d");
    assert_eq!(everything(&*s).await, vec!["d0".to_owned()]);
}
