//! Property test: no password, whatever printable ASCII characters it holds and whether
//! or not it is percent-encoded, shows up in anything certstore prints about a storage
//! URL: [`certstore::redact`], `StorageUrl`'s `Debug` and `Display`, its target's `Debug`,
//! and the messages (`Display` and `Debug`) of URL errors.
#![allow(clippy::unwrap_used)]

use certstore::{StorageUrl, redact};

/// How many random passwords are tried; each is used raw and percent-encoded in every
/// URL form below.
const CASES: usize = 4000;

/// A fixed seed, so a failure can be replayed; change it to explore other cases.
const SEED: u64 = 0x5EED_CE27_5702_E000;

/// SplitMix64: small, seeded and good enough to spread test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 8 to 24 printable ASCII characters (space to `~`), with every character as
    /// likely as any other; one in four passwords is forced to hold a `/`, `?`, `#` or
    /// `@`, the characters that end an authority.
    fn password(&mut self) -> String {
        let len = 8 + self.below(17) as usize;
        let mut pw: Vec<u8> = (0..len).map(|_| 0x20 + self.below(95) as u8).collect();
        if self.below(4) == 0 {
            let at = self.below(len as u64) as usize;
            pw[at] = b"/?#@"[self.below(4) as usize];
        }
        String::from_utf8(pw).unwrap()
    }
}

/// Every byte outside the URL "unreserved" set written `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The URL forms, `{}` standing for the password. The lone user-info form
/// (`rediss://secret@host`) is only used with passwords without `:`, since a `:` there
/// makes what precedes it a user name by URL syntax.
const WITH_USER: &[&str] = &[
    "redis://app:{}@127.0.0.1:6379/0?namespace=fleet",
    "redis://:{}@cache.example:6380",
    "encrypted+rediss://default:{}@cache.example:6380/2",
    "postgres://app:{}@db.internal:5432/certs?sslmode=verify-full&namespace=n&table_prefix=tls",
    "postgresql://app:{}@db1:5432,db2:5433/certs",
    "mysql://root:{}@[::1]:3306/c?ssl-mode=REQUIRED",
    "encrypted+mariadb://root:{}@10.0.0.7/certs?namespace=x",
];
const LONE: &[&str] = &["rediss://{}@cache.example/1", "redis://{}@h"];

/// Forms that fail to parse, each built from a valid form.
fn failing(template: &str) -> Vec<String> {
    let join = if template.contains('?') { '&' } else { '?' };
    let body = template.strip_prefix("encrypted+").unwrap_or(template);
    let scheme_end = body.find("://").unwrap();
    vec![
        format!("{template}{join}table_prefix=bad;drop"),
        format!("{template}{join}namespace={{x}}"),
        format!("ftp{}", &body[scheme_end..]),
        format!("encrypted+encrypted+{body}"),
    ]
}

/// A password no generated one equals, to build the same URL without the secret.
const PLACEHOLDER: &str = "Placeholder0";

/// Everything printed about `url`: `redact`, `Debug` and `Display` of the parsed URL
/// and of its target, or the error's message and `Debug`.
fn shown(url: &str) -> Vec<String> {
    let mut out = vec![redact(url)];
    match StorageUrl::parse(url) {
        Ok(parsed) => {
            out.push(format!("{parsed:?}"));
            out.push(format!("{parsed:#?}"));
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

/// Checks that nothing printed about `template` filled with `form` shows any of
/// `secrets`, nor depends on the password at all (which also rules out showing a part
/// of it), and that `secrets()` lists the password for scrubbing.
fn check(template: &str, form: &str, secrets: &[&str]) {
    check_against(
        template,
        form,
        secrets,
        &shown(&template.replace("{}", PLACEHOLDER)),
    );
}

/// [`check`] with what is printed for the placeholder password given.
fn check_against(template: &str, form: &str, secrets: &[&str], without_secret: &[String]) {
    let url = template.replace("{}", form);
    let got = shown(&url);
    for (what, text) in got.iter().enumerate() {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "output {what} of {url:?} shows the password {secret:?}: {text}"
            );
        }
    }
    assert_eq!(
        got, without_secret,
        "what is printed about {url:?} depends on the password"
    );
    if let Ok(parsed) = StorageUrl::parse(&url) {
        let listed = parsed.secrets();
        assert!(
            secrets.iter().any(|s| listed.iter().any(|l| l == s)),
            "secrets() of {url:?} misses the password: {listed:?}"
        );
    }
}

#[test]
fn random_passwords_never_show() {
    let mut rng = Rng(SEED);
    let mut checked = 0usize;
    // What is printed with the placeholder password, once per template.
    let mut expected = std::collections::HashMap::new();
    for _ in 0..CASES {
        let raw = rng.password();
        let encoded = percent_encode(&raw);
        let secrets = [raw.as_str(), encoded.as_str()];
        for form in [raw.as_str(), encoded.as_str()] {
            let templates = WITH_USER
                .iter()
                .chain(if raw.contains(':') { &[][..] } else { LONE });
            for template in templates {
                // A password that happens to be part of the URL around it (vanishingly
                // rare at 8+ characters) would be "shown" without any leak.
                if template.replace("{}", "").contains(form) {
                    continue;
                }
                let mut run = |template: &str| {
                    let want = expected
                        .entry(template.to_owned())
                        .or_insert_with(|| shown(&template.replace("{}", PLACEHOLDER)));
                    check_against(template, form, &secrets, want);
                };
                run(template);
                for bad in failing(template) {
                    run(&bad);
                }
                checked += 1;
            }
        }
    }
    // Every case ran (none was skipped as part of its surroundings).
    assert!(checked >= CASES * 2 * WITH_USER.len(), "{checked}");
}

#[test]
fn the_reported_password_stays_hidden() {
    check(
        "redis://:{}@127.0.0.1:6379/0",
        "S3C/RETslash",
        &["S3C/RETslash", "RETslash"],
    );
    assert_eq!(
        redact("redis://:S3C/RETslash@127.0.0.1:6379/0"),
        "redis://:***@127.0.0.1:6379/0"
    );
}
