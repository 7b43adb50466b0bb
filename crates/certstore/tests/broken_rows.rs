//! One unreadable value never hides the rest: `ls` lists every certificate and marks the
//! one whose record cannot be read, on an encrypted storage (a value that fails to
//! authenticate) and on Redis (a value written by `redis-cli` without certstore's
//! header), and `show` of that name exits non-zero.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use integration_tests::{service_url, unique_name};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn certstore(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_certstore"))
        .args(args)
        .env_remove("CERTSTORE_STORAGE")
        .env_remove("RUST_LOG")
        .env("CERTSTORE_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let crt = dir.join(format!("{name}.crt"));
    let pem = dir.join(format!("{name}.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    (crt, pem)
}

/// Imports `good.example` and `bad.example` into `url`, lets `damage` break the latter's
/// record, and checks what `ls --json` and `show` say.
fn one_bad_row(url: &str, damage: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["good.example", "bad.example"] {
        let (crt, key) = cert(dir.path(), name);
        let (code, _, stderr) = certstore(&[
            "import",
            "--storage",
            url,
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stderr}");
    }
    damage();
    let (code, stdout, stderr) = certstore(&["ls", "--json", "--storage", url]);
    assert_eq!(code, 0, "ls lists the rest: {stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
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
    let (code, _, _) = certstore(&["show", "--storage", url, "bad.example"]);
    assert_ne!(code, 0, "show of an unreadable certificate fails");
    let (code, _, stderr) = certstore(&["show", "--storage", url, "good.example"]);
    assert_eq!(code, 0, "{stderr}");
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
