//! Storage URLs: parsing and redaction never panic on any text, and a password placed in
//! any URL form never appears in what certstore prints about that URL.
#![no_main]

use arbitrary::Arbitrary;
use certstore::{StorageUrl, redact};
use libfuzzer_sys::fuzz_target;

/// URL forms, `{}` standing for the password.
const FORMS: &[&str] = &[
    "redis://app:{}@127.0.0.1:6379/0?namespace=fleet",
    "rediss://:{}@cache.example:6380",
    "encrypted+redis://default:{}@cache.example/2",
    "postgres://app:{}@db.internal:5432/certs?sslmode=verify-full",
    "postgresql://app:{}@db1:5432,db2:5433/certs",
    "mysql://root:{}@[::1]:3306/c?ssl-mode=REQUIRED",
    "encrypted+mariadb://root:{}@10.0.0.7/certs?namespace=x",
];

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    /// Any text, parsed and redacted as typed on a command line.
    raw: &'a str,
    /// A password for one of the forms.
    password: &'a str,
    form: u8,
}

/// Everything printed about `url`.
fn shown(url: &str) -> Vec<String> {
    let mut out = vec![redact(url)];
    match StorageUrl::parse(url) {
        Ok(parsed) => {
            out.push(format!("{parsed:?}"));
            out.push(parsed.to_string());
            out.push(parsed.redacted());
            out.push(format!("{:?}", parsed.target()));
        }
        Err(err) => {
            out.push(err.to_string());
            out.push(format!("{err:?}"));
        }
    }
    out
}

fuzz_target!(|input: Input<'_>| {
    let _ = shown(input.raw);

    // Short passwords or ones made of URL syntax could match other parts of the text by
    // chance; the property is about real secrets.
    let password = input.password;
    if password.len() < 8 || password.chars().any(|c| c.is_control()) {
        return;
    }
    let form = FORMS[usize::from(input.form) % FORMS.len()];
    let url = form.replace("{}", password);
    // A password that is a word certstore prints anyway (a field name, a host) proves
    // nothing: compare with what is printed for the same URL with another password.
    let baseline = shown(&form.replace("{}", "Placeholder0"));
    if baseline.iter().any(|text| text.contains(password)) {
        return;
    }
    for text in shown(&url) {
        assert!(
            !text.contains(password),
            "{url:?} printed its password in {text:?}"
        );
    }
});
