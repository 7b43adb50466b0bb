//! One unreadable value never hides the rest: `ls` lists every certificate and marks the
//! one whose record cannot be read, on an encrypted storage (a value that fails to
//! authenticate) and on Redis (a value written by `redis-cli` without certstore's
//! header), and `show` of that name exits non-zero.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::{Command, Stdio};

use common::{KEY_A, Run, make_cert, path, run_env};
use integration_tests::{service_url, unique_name};

/// `certstore` with `args`, the test key set for encrypted storages.
fn certstore(args: &[&str]) -> Run {
    run_env(&[("CERTSTORE_KEY", KEY_A)], args)
}

/// Imports `good.example` and `bad.example` into `url`, lets `damage` break the latter's
/// record, and checks what `ls --json` and `show` say.
fn one_bad_row(url: &str, damage: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["good.example", "bad.example"] {
        let (crt, key) = make_cert(dir.path(), name, &[name]);
        certstore(&[
            "import",
            "--storage",
            url,
            "--cert",
            &path(&crt),
            "--key",
            &path(&key),
        ])
        .ok();
    }
    damage();
    let ls = certstore(&["ls", "--json", "--storage", url]);
    assert_eq!(ls.code, 0, "ls lists the rest: {}", ls.stderr);
    let stdout = &ls.stdout;
    let rows = ls.json();
    let rows = rows.as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.to_string().contains(name))
            .unwrap_or_else(|| panic!("{name} is listed: {stdout}"))
            .clone()
    };
    assert_eq!(row("good.example")["broken"], false, "{stdout}");
    assert_eq!(row("bad.example")["broken"], true, "{stdout}");
    assert!(row("bad.example")["reason"].is_string(), "{stdout}");
    let shown = certstore(&["show", "--storage", url, "bad.example"]);
    assert_ne!(shown.code, 0, "show of an unreadable certificate fails");
    certstore(&["show", "--storage", url, "good.example"]).ok();
}

#[test]
fn encrypted_storage_lists_past_a_value_that_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let url = format!("encrypted+{}", root.display());
    let bundle = root.join("certificates/imported/bad.example/bad.example.bundle");
    one_bad_row(&url, || {
        let mut sealed = std::fs::read(&bundle).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 0x55;
        std::fs::write(&bundle, sealed).unwrap();
    });
}

#[test]
fn redis_lists_past_a_value_written_by_another_client() {
    let Some(redis) = service_url("CERTSTORE_TEST_REDIS_URL") else {
        return;
    };
    let ns = unique_name("rows");
    let url = format!("{}?namespace={ns}", redis.trim_end_matches('/'));
    let redis_key = format!("{{{ns}}}:v:certificates/imported/bad.example/bad.example.bundle");
    one_bad_row(&url, || {
        let status = Command::new("redis-cli")
            .args(["-u", &redis, "SET", &redis_key, "not a certstore value"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    });
}
