//! Certificate records as `docs/storage-layout.md` specifies them, and the two directions
//! every backend is checked in: certstore writes and the native client reads the exact
//! bytes back; the native client writes (and edits) and certstore reads.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::native::Native;
use crate::common::{Run, path, run};

/// A self-signed ECDSA P-256 certificate with a known serial and validity.
pub struct TestCert {
    pub names: Vec<String>,
    pub chain: String,
    pub key: String,
    /// The serial as certstore writes it: lowercase hex, no separators.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl TestCert {
    /// A certificate for `names`, valid from 1 January of `from` to 1 January of `until`.
    pub fn new(names: &[&str], (from, until): (i32, i32)) -> Self {
        let not_before = rcgen::date_time_ymd(from, 1, 1);
        let not_after = rcgen::date_time_ymd(until, 1, 1);
        // 128 random bits; the first digit 1 to 7 keeps the DER integer positive without
        // a leading zero byte.
        let token = cert_core::LockToken::generate();
        let serial = format!(
            "{}{}",
            1 + token.as_str().as_bytes()[0] % 7,
            &token.as_str()[1..]
        );
        let serial_bytes = super::native::from_hex(&serial);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial_bytes));
        TestCert {
            names: names.iter().map(|s| s.to_string()).collect(),
            chain: params.self_signed(&key).unwrap().pem(),
            key: key.serialize_pem(),
            serial,
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
        }
    }

    /// The metadata JSON of the record (the `.json` copy, the bundle's `meta`).
    pub fn meta(&self, issuer: &str, obtained_at: i64) -> Value {
        json!({
            "names": self.names,
            "issuer": issuer,
            "key_type": "ecdsa-p256",
            "serial": self.serial,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "obtained_at": obtained_at,
        })
    }

    /// Imports the certificate with `certstore import` under the issuer segment `issuer`,
    /// replacing what the record holds.
    pub fn import(&self, url: &str, issuer: &str) {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = (dir.path().join("c.crt"), dir.path().join("c.key"));
        std::fs::write(&crt, &self.chain).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        let (crt, key) = (path(&crt), path(&key));
        run(&[
            "import",
            "--create",
            "--force",
            "--issuer",
            issuer,
            "--storage",
            url,
            "--cert",
            &crt,
            "--key",
            &key,
        ])
        .ok();
    }
}

/// The storage keys of the record of `segment` (a name as `keys::safe_name` writes it)
/// under the issuer segment `issuer`.
pub struct RecordKeys {
    pub prefix: String,
    pub bundle: String,
    pub chain: String,
    pub key: String,
    pub meta: String,
}

impl RecordKeys {
    pub fn new(issuer: &str, segment: &str) -> Self {
        let prefix = format!("certificates/{issuer}/{segment}");
        let part = |suffix: &str| format!("{prefix}/{segment}.{suffix}");
        RecordKeys {
            bundle: part("bundle"),
            chain: part("crt"),
            key: part("key"),
            meta: part("json"),
            prefix,
        }
    }

    /// The values a writer of the documented layout stores, in its order: the bundle (the
    /// commit point), then the key, chain and metadata copies.
    pub fn values(&self, cert: &TestCert, issuer: &str) -> Vec<(String, Vec<u8>)> {
        let meta = cert.meta(issuer, now());
        let bundle = json!({
            "format": "certstore-certificate/1",
            "meta": meta,
            "chain_pem": cert.chain,
            "key_pem": cert.key,
        });
        vec![
            (self.bundle.clone(), bundle.to_string().into_bytes()),
            (self.key.clone(), cert.key.clone().into_bytes()),
            (self.chain.clone(), cert.chain.clone().into_bytes()),
            (self.meta.clone(), meta.to_string().into_bytes()),
        ]
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

fn value<'a>(dump: &'a BTreeMap<String, Vec<u8>>, key: &str) -> &'a [u8] {
    dump.get(key)
        .unwrap_or_else(|| panic!("{key} is stored: {:?}", dump.keys()))
}

fn json_of(dump: &BTreeMap<String, Vec<u8>>, key: &str) -> Value {
    serde_json::from_slice(value(dump, key)).unwrap_or_else(|err| panic!("{key}: {err}"))
}

/// Keys of the dump that are storage keys (not the backend's own lock or probe entries).
fn storage_keys(dump: &BTreeMap<String, Vec<u8>>) -> Vec<&str> {
    dump.keys()
        .map(String::as_str)
        .filter(|key| !key.starts_with(".certstore"))
        .collect()
}

/// `certstore import` of a fresh certificate, read back with the native client: exactly
/// the four values of the record, the chain and key byte for byte as imported, a bundle
/// that holds them with the metadata, and the same metadata as the `.json` copy. Returns
/// what the native client read.
pub fn certstore_writes_native_reads(native: &dyn Native) -> BTreeMap<String, Vec<u8>> {
    let cert = TestCert::new(&["interop.example", "www.interop.example"], (2024, 2099));
    let before = now();
    cert.import(&native.url(), "imported");
    let dump = native.dump();
    let keys = RecordKeys::new("imported", "interop.example");
    let mut want = vec![&keys.bundle, &keys.chain, &keys.key, &keys.meta];
    want.sort();
    assert_eq!(
        storage_keys(&dump),
        want,
        "the record's values and nothing else"
    );
    assert_eq!(value(&dump, &keys.chain), cert.chain.as_bytes());
    assert_eq!(value(&dump, &keys.key), cert.key.as_bytes());
    let bundle = json_of(&dump, &keys.bundle);
    assert_eq!(bundle["format"], "certstore-certificate/1", "{bundle}");
    assert_eq!(bundle["chain_pem"], cert.chain.as_str());
    assert_eq!(bundle["key_pem"], cert.key.as_str());
    let obtained = bundle["meta"]["obtained_at"].as_i64().unwrap();
    assert!(obtained >= before && obtained <= now(), "{bundle}");
    assert_eq!(bundle["meta"], cert.meta("imported", obtained));
    assert_eq!(json_of(&dump, &keys.meta), bundle["meta"]);
    dump
}

/// Runs `certstore` and parses its JSON output.
fn certstore_json(args: &[&str]) -> Value {
    run(args).ok().json()
}

/// The `ls --json` entry of the name segment `segment`.
fn listed(url: &str, segment: &str) -> Value {
    let ls = certstore_json(&["ls", "--json", "--storage", url]);
    ls.as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["name"] == segment)
        .cloned()
        .unwrap_or_else(|| panic!("{segment} is listed: {ls}"))
}

/// What `show --json` says of `name`, which must be a valid record, checked against
/// `cert`.
fn shows(url: &str, name: &str, cert: &TestCert) -> Value {
    let shown = certstore_json(&["show", "--json", "--storage", url, name]);
    let shown = &shown[0];
    assert_eq!(shown["broken"], false, "{shown}");
    assert_eq!(shown["serial"], cert.serial.as_str(), "{shown}");
    assert_eq!(shown["names"], json!(cert.names), "{shown}");
    for (field, at) in [
        ("not_before", cert.not_before),
        ("not_after", cert.not_after),
    ] {
        let text = certstore::inventory::format_time(at);
        assert_eq!(shown[field], text.as_str(), "{shown}");
    }
    assert_eq!(shown["key_type"], "ECDSA P-256", "{shown}");
    shown.clone()
}

/// A record written by the native client alone, in the documented layout, and a second one
/// of copies only (no bundle) under a wildcard's name segment: `ls` and `show` read both
/// as valid. Then the hand edits the layout describes: a copy edited by hand changes
/// nothing shown and is overwritten by the next `import`; a bundle of an unknown format
/// makes the record broken, and `certstore rm` removes all of it.
pub fn native_writes_certstore_reads(native: &dyn Native) {
    let url = native.url();
    // The first use creates the tables (SQL) or the bucket and container (--create).
    let empty = run(&["ls", "--create", "--storage", &url]).ok();
    assert!(
        empty.stdout.starts_with("no certificates"),
        "{}",
        empty.stdout
    );
    let keys = RecordKeys::new("native", "native.example");
    let parts = RecordKeys::new("native", "_.parts.example");
    hand_written_records_load(native, &keys, &parts);
    an_edited_copy_is_replaced_by_the_next_save(native, &keys);
    a_bundle_of_unknown_format_is_broken_until_removed(native, &keys, &parts);
}

const NAMES: [&str; 2] = ["native.example", "alt.native.example"];

/// The record `keys` of a bundle and its copies, and the record `parts` of copies only,
/// written by the native client, as `ls` and `show` see them.
fn hand_written_records_load(native: &dyn Native, keys: &RecordKeys, parts: &RecordKeys) {
    let url = native.url();
    let cert = TestCert::new(&NAMES, (2025, 2098));
    let wildcard = TestCert::new(&["*.parts.example"], (2024, 2097));
    let mut values = keys.values(&cert, "native");
    values.extend(parts.values(&wildcard, "native").into_iter().skip(1));
    native.put(&values);

    let entry = listed(&url, "native.example");
    assert_eq!(entry["broken"], false, "{entry}");
    assert_eq!(entry["issuer"], "native", "{entry}");
    assert_eq!(entry["layout"], "bundle", "{entry}");
    assert_eq!(entry["names"], json!(cert.names), "{entry}");
    assert_eq!(entry["not_after_unix"], cert.not_after, "{entry}");
    assert_eq!(entry["prefix"], keys.prefix.as_str(), "{entry}");
    let shown = shows(&url, "native.example", &cert);
    assert_eq!(shown["keys"]["bundle"], keys.bundle.as_str(), "{shown}");
    assert_eq!(shown["keys"]["metadata"], keys.meta.as_str(), "{shown}");
    let entry = listed(&url, "_.parts.example");
    assert_eq!(entry["layout"], "parts", "{entry}");
    let shown = shows(&url, "*.parts.example", &wildcard);
    assert_eq!(shown["keys"]["bundle"], Value::Null, "{shown}");
    assert_eq!(shown["keys"]["chain"], parts.chain.as_str(), "{shown}");
}

/// A copy edited by hand is not what certstore reads, and the next save replaces it.
fn an_edited_copy_is_replaced_by_the_next_save(native: &dyn Native, keys: &RecordKeys) {
    let url = native.url();
    native.put(&[(keys.chain.clone(), b"edited by hand\n".to_vec())]);
    let shown = certstore_json(&["show", "--json", "--storage", &url, "native.example"]);
    assert_eq!(shown[0]["broken"], false, "{shown}");
    let renewed = TestCert::new(&NAMES, (2025, 2099));
    renewed.import(&url, "native");
    shows(&url, "native.example", &renewed);
    let dump = native.dump();
    assert_eq!(value(&dump, &keys.chain), renewed.chain.as_bytes());
    assert_eq!(value(&dump, &keys.key), renewed.key.as_bytes());
    let bundle = json_of(&dump, &keys.bundle);
    assert_eq!(bundle["chain_pem"], renewed.chain.as_str(), "{bundle}");
    assert_eq!(json_of(&dump, &keys.meta), bundle["meta"]);
}

/// A bundle of a format this version does not know makes the record broken; `rm` removes
/// every value of it and nothing else.
fn a_bundle_of_unknown_format_is_broken_until_removed(
    native: &dyn Native,
    keys: &RecordKeys,
    parts: &RecordKeys,
) {
    let url = native.url();
    let mut unknown = json_of(&native.dump(), &keys.bundle);
    unknown["format"] = json!("certstore-certificate/9");
    native.put(&[(keys.bundle.clone(), unknown.to_string().into_bytes())]);
    let entry = listed(&url, "native.example");
    assert_eq!(entry["broken"], true, "{entry}");
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains("unknown format"), "{entry}");
    let show: Run = run(&["show", "--storage", &url, "native.example"]);
    assert_ne!(
        show.code, 0,
        "show of a broken record fails: {}",
        show.stdout
    );
    run(&["rm", "--yes", "--storage", &url, "native.example"]).ok();
    let left: Vec<String> = native.dump().into_keys().collect();
    let record = format!("{}/", keys.prefix);
    assert!(
        !left.iter().any(|key| key.starts_with(&record)),
        "rm leaves nothing of the record: {left:?}"
    );
    assert!(
        left.contains(&parts.meta),
        "rm leaves other records: {left:?}"
    );
}

/// Clears the namespace with the native client, which then finds it empty.
pub fn cleared(native: &dyn Native) {
    native.clear();
    let left = native.dump();
    assert!(left.is_empty(), "cleared: {:?}", left.keys());
}
