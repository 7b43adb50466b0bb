//! A storage written without encryption, opened as `encrypted+`: `rekey` and `doctor` say
//! to seal its plaintext values with `certstore rekey --seal-plaintext` (not to change the
//! key), and once sealed both pass.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{KEY_A, import, make_cert, path, run_env};

/// The doctor's `encryption` check, as JSON.
fn encryption_check(storage: &str) -> serde_json::Value {
    let doctor = run_env(
        &[("CERTSTORE_KEY", KEY_A)],
        &["doctor", "--json", "--storage", storage],
    )
    .json();
    doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "encryption")
        .unwrap_or_else(|| panic!("no encryption check: {doctor}"))
        .clone()
}

#[test]
fn plaintext_values_are_told_to_be_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let plain = path(&dir.path().join("store"));
    let (crt, key) = make_cert(dir.path(), "plain", &["plain.example"]);
    import(&plain, &[], &crt, &key);
    let sealed = format!("encrypted+{plain}");

    let rekey = run_env(
        &[("CERTSTORE_KEY", KEY_A)],
        &["rekey", "--storage", &sealed],
    )
    .fails_with(2, "certstore rekey --seal-plaintext");
    assert!(
        rekey.stderr.contains("stored without encryption"),
        "{}",
        rekey.stderr
    );
    assert!(!rekey.stderr.contains("CERTSTORE_KEY"), "{}", rekey.stderr);

    let check = encryption_check(&sealed);
    assert_eq!(check["status"], "fail", "{check}");
    let hint = check["hint"].as_str().unwrap();
    assert!(hint.contains("certstore rekey --seal-plaintext"), "{check}");
    assert!(!hint.contains("CERTSTORE_KEY"), "{check}");

    run_env(
        &[("CERTSTORE_KEY", KEY_A)],
        &["rekey", "--seal-plaintext", "--storage", &sealed],
    )
    .ok();
    let check = encryption_check(&sealed);
    assert_eq!(check["status"], "pass", "{check}");
    run_env(
        &[("CERTSTORE_KEY", KEY_A)],
        &["rekey", "--storage", &sealed],
    )
    .ok();
}
