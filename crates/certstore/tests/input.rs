//! Hostile and careless input to the `certstore` command, end to end with the built
//! binary: export into shared directories and through links, imports that do not fit the
//! name or replace another certificate, oversized input, migrations onto their own
//! source, escape sequences in what is printed, and the messages an operator needs.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cert_core::{Locker, Storage};
use cert_file::FileStorage;
use common::{KEY_A, Run, command, make_cert, make_cert_with, path, run, run_env};

fn import_args<'a>(store: &'a str, crt: &'a str, key: &'a str) -> Vec<&'a str> {
    vec!["import", "--storage", store, "--cert", crt, "--key", key]
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn export_keeps_an_existing_directory_as_it_is_and_never_follows_links() {
    let dir = tempfile::tempdir().unwrap();
    let store = path(&dir.path().join("store"));
    let (crt, key) = make_cert(dir.path(), "x", &["x.example"]);
    run(&import_args(&store, &path(&crt), &path(&key))).ok();

    // A shared sticky directory keeps its mode; the files are private.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    run(&[
        "export",
        "--storage",
        &store,
        "x.example",
        "--out",
        &path(&shared),
    ])
    .ok();
    assert_eq!(mode(&shared), 0o1777, "the directory's mode is left alone");
    assert_eq!(mode(&shared.join("x.example.key")), 0o600);
    assert_eq!(mode(&shared.join("x.example.crt")), 0o600);

    // A missing directory is created private.
    let fresh = dir.path().join("fresh/deeper");
    run(&[
        "export",
        "--storage",
        &store,
        "x.example",
        "--out",
        &path(&fresh),
    ])
    .ok();
    assert_eq!(mode(&fresh), 0o700);

    // A link planted at a target name is refused, with or without --force, and what
    // it points to is untouched.
    let planted = dir.path().join("planted");
    let victim = dir.path().join("victim");
    std::fs::create_dir(&planted).unwrap();
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, planted.join("x.example.key")).unwrap();
    for force in [false, true] {
        let mut args = vec!["export", "--storage", &store, "x.example"];
        let out = path(&planted);
        args.extend(["--out", &out]);
        if force {
            args.push("--force");
        }
        run(&args).fails_with(2, "symbolic link");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!planted.join("x.example.crt").exists(), "nothing written");
    }
}

#[test]
fn import_checks_the_name_the_file_and_what_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let store = path(&dir.path().join("store"));
    let (crt, key) = make_cert(dir.path(), "shop", &["shop.example", "*.shop.example"]);
    let (crt, key) = (path(&crt), path(&key));

    // (a) The name must be covered by the certificate.
    let mut args = import_args(&store, &crt, &key);
    args.extend(["--name", "bank.example"]);
    run(&args).fails_with(2, "not valid for bank.example");
    assert!(
        !dir.path().join("store").exists(),
        "a refused import writes nothing"
    );
    let mut args = import_args(&store, &crt, &key);
    args.extend(["--name", "www.shop.example"]);
    run(&args).ok();

    // (b) The same certificate again is fine; another one needs --force.
    run(&import_args(&store, &crt, &key)).ok();
    let (other_crt, other_key) = make_cert(dir.path(), "other", &["shop.example"]);
    let (other_crt, other_key) = (path(&other_crt), path(&other_key));
    run(&import_args(&store, &other_crt, &other_key))
        .fails_with(2, "already holds a different certificate for shop.example");
    let serial_of = |run: Run| {
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        json[0]["serial"].as_str().unwrap().to_owned()
    };
    let before = serial_of(run(&["show", "--json", "--storage", &store, "shop.example"]).ok());
    let mut args = import_args(&store, &other_crt, &other_key);
    args.push("--force");
    run(&args).ok();
    let after = serial_of(run(&["show", "--json", "--storage", &store, "shop.example"]).ok());
    assert_ne!(before, after, "--force replaces it");

    // (c) A chain file holding a private key is refused.
    let mixed = dir.path().join("mixed.pem");
    let text = std::fs::read_to_string(&crt).unwrap() + &std::fs::read_to_string(&key).unwrap();
    std::fs::write(&mixed, text).unwrap();
    let mut args = import_args(&store, "", &key);
    let mixed = path(&mixed);
    args[4] = &mixed;
    args.push("--force");
    run(&args).fails_with(2, "holds a private key");

    // (d) Oversized input fails fast, without reading it all.
    let started = Instant::now();
    let mut args = import_args(&store, &crt, "/dev/zero");
    args.push("--force");
    run(&args).fails_with(2, "larger than 1 MiB");
    assert!(started.elapsed() < Duration::from_secs(10));
    let long = dir.path().join("long.pem");
    let one = std::fs::read_to_string(&crt).unwrap();
    std::fs::write(&long, one.repeat(101)).unwrap();
    let long = path(&long);
    let mut args = import_args(&store, &long, &key);
    args.push("--force");
    run(&args).fails_with(2, "101 certificates");
}

#[tokio::test]
async fn migrate_refuses_its_own_source_and_decrypts_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let sealed = format!("encrypted+{}", path(&root));
    let env = [("CERTSTORE_KEY", KEY_A)];
    let (crt, key) = make_cert(dir.path(), "s", &["s.example"]);
    run_env(&env, &import_args(&sealed, &path(&crt), &path(&key))).ok();
    let files = FileStorage::new(&root);
    let before = files
        .load("certificates/imported/s.example/s.example.key")
        .await
        .unwrap();
    assert!(!before.windows(11).any(|w| w == b"PRIVATE KEY"));

    // The same directory however it is written: with a link, relatively, with a slash.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    let relative = "./store/";
    for plain in [path(&root), path(&link), format!("file://{}", path(&link))] {
        run_env(&env, &["migrate", &sealed, &plain]).fails_with(2, "the same storage");
    }
    let out = command(&env)
        .current_dir(dir.path())
        .args(["migrate", &sealed, relative])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        files
            .load("certificates/imported/s.example/s.example.key")
            .await
            .unwrap(),
        before,
        "the sealed value is untouched"
    );

    // Decrypting into another storage needs --decrypt.
    let plain = dir.path().join("plain");
    run_env(&env, &["migrate", &sealed, &path(&plain)]).fails_with(2, "--decrypt");
    assert!(!plain.exists(), "a refused migration creates nothing");
    run_env(&env, &["migrate", "--dry-run", &sealed, &path(&plain)]).ok();
    run_env(&env, &["migrate", "--decrypt", &sealed, &path(&plain)]).ok();
    let copied = FileStorage::new(&plain)
        .load("certificates/imported/s.example/s.example.key")
        .await
        .unwrap();
    assert!(copied.windows(11).any(|w| w == b"PRIVATE KEY"));
}

#[tokio::test]
async fn migrate_says_what_it_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let files = FileStorage::new(&root);
    files.store("a", b"1").await.unwrap();
    // A lock left behind by a process that died: nobody refreshes it, it expires.
    files
        .try_acquire("clean", Duration::from_secs(3))
        .await
        .unwrap()
        .unwrap();
    let out = run(&[
        "migrate",
        "--quiet",
        &path(&root),
        &path(&dir.path().join("copy")),
    ])
    .ok();
    let waits: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("waiting for the lock clean"))
        .collect();
    assert_eq!(waits.len(), 1, "{}", out.stderr);
    assert!(out.stdout.starts_with("copied 1,"), "{}", out.stdout);
}

#[test]
fn control_characters_from_certificates_are_escaped_in_human_output() {
    let dir = tempfile::tempdir().unwrap();
    let store = path(&dir.path().join("store"));
    let (crt, key) = make_cert_with(dir.path(), "evil", &["evil.example"], |params| {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a\u{1b}]0;pwned\u{7}b\u{1b}[2J");
    });
    run(&import_args(&store, &path(&crt), &path(&key))).ok();
    let shown = run(&["show", "--storage", &store, "evil.example"]).ok();
    assert!(!shown.stdout.contains('\u{1b}'), "{:?}", shown.stdout);
    assert!(!shown.stdout.contains('\u{7}'), "{:?}", shown.stdout);
    assert!(
        shown.stdout.contains("a\\u{1b}]0;pwned\\u{7}b\\u{1b}[2J"),
        "{}",
        shown.stdout
    );
    // JSON escapes by itself: the subject comes back exactly.
    let json = run(&["show", "--json", "--storage", &store, "evil.example"]).ok();
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        value[0]["subject"]
            .as_str()
            .unwrap()
            .contains("a\u{1b}]0;pwned\u{7}b\u{1b}[2J")
    );
}

#[test]
fn a_certificate_valid_for_a_day_shows_hours_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = path(&dir.path().join("store"));
    let (crt, key) = make_cert_with(dir.path(), "day", &["day.example"], |params| {
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::hours(23) + time::Duration::minutes(30);
    });
    run(&import_args(&store, &path(&crt), &path(&key))).ok();
    let ls = run(&["ls", "--storage", &store]).ok();
    let row: Vec<&str> = ls
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row[3..], ["23h", "ok"], "{}", ls.stdout);
    let shown = run(&["show", "--storage", &store, "day.example"]).ok();
    assert!(shown.stdout.contains("(23h left)"), "{}", shown.stdout);
}

#[test]
fn argument_errors_print_clap_s_whole_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["unlock", "--storage", &path(dir.path()), "issue/x"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert!(out.stderr.contains("Usage:"), "{}", out.stderr);
}
