//! [`redact`]: a storage URL made safe to print.
//!
//! # Where the user-info part ends
//!
//! Passwords are often pasted into URLs without percent-encoding, and may then hold `/`,
//! `?`, `#` or `@`. A strict parser (the `url` crate included) ends the authority at the
//! first `/`, `?` or `#`, which would put the rest of such a password into the path,
//! query or fragment, and print it. A host cannot hold an `@`, so here the user-info part
//! ends at the **last `@` of the URL**: that is how such URLs are meant, and it never
//! shows part of a password, whatever characters it holds. The empty authority of a
//! `file:` or `sqlite:` URL (`file:///path`) has no user-info.
//!
//! The rule errs towards hiding: an unencoded `@` in a query value
//! (`?application_name=me@example`) hides everything before it, host included, in what
//! is printed and reaches the driver as part of the password; write it `%40`, as URLs
//! require.

use std::fmt::Write as _;

/// Query parameters whose values are never secret and are shown as they are.
const SAFE_PARAMS: &[&str] = &[
    "namespace",
    "table_prefix",
    "endpoint",
    "region",
    "path_style",
    "sslmode",
    "ssl-mode",
    "ssl_mode",
    "mode",
    "protocol",
    "application_name",
    "connect_timeout",
];

/// A URL split around its user-info part (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    /// The scheme, without `://`.
    pub scheme: &'a str,
    /// The user-info part, without the `@`, if there is one.
    pub userinfo: Option<&'a str>,
    /// Everything after the user-info: host, port, path, query, fragment.
    pub rest: &'a str,
}

impl<'a> Parts<'a> {
    /// Splits `url` (`scheme://...`); `None` when there is no `://`.
    pub fn split(url: &'a str) -> Option<Self> {
        let sep = url.find("://")?;
        let (scheme, after) = (&url[..sep], &url[sep + 3..]);
        let (userinfo, rest) = match userinfo_end(scheme, after) {
            Some(at) => (Some(&after[..at]), &after[at + 1..]),
            None => (None, after),
        };
        Some(Parts {
            scheme,
            userinfo,
            rest,
        })
    }

    /// The user name and the password of the user-info part, both as written (not
    /// decoded). A lone user-info part is returned as the password, since some schemes
    /// (Redis) read it as one.
    pub fn credentials(&self) -> Option<(Option<&'a str>, &'a str)> {
        let userinfo = self.userinfo?;
        Some(match userinfo.split_once(':') {
            Some((user, password)) => (Some(user), password),
            None => (None, userinfo),
        })
    }
}

/// The position of the `@` that ends the user-info part of `after` (the text following
/// `scheme://`), if any: the last one, except in `file:` and `sqlite:` URLs with an
/// empty authority (`file:///a@b` is a path). Other schemes always name a host, so
/// `rediss:///secret@host` holds a password that starts with `/`.
fn userinfo_end(scheme: &str, after: &str) -> Option<usize> {
    let path_scheme = scheme.eq_ignore_ascii_case("file") || scheme.eq_ignore_ascii_case("sqlite");
    if path_scheme && after.starts_with('/') {
        return None;
    }
    after.rfind('@')
}

/// `url` with every secret replaced by `***`, for error messages and logs.
///
/// - a password in the user-info part (`scheme://user:password@host`) becomes
///   `user:***`, whatever characters it holds, encoded or not (the user-info part ends
///   at the last `@` of the URL: a host cannot hold one, and an unencoded `/`, `?` or `#`
///   in a password must not end it early); a lone user-info part
///   (`redis://secret@host`), which some schemes read as a password, becomes `***`;
/// - the value of every query parameter that is not known to be harmless (a SAS
///   signature, a password, a key) becomes `***`, and a parameter without a value that
///   is not known to be harmless is shown as `***`; `namespace`, `endpoint`, `region`,
///   `path_style` and a few others are kept, decoded (an `endpoint` is itself redacted);
/// - a fragment becomes `#***`;
/// - an Azure connection string (`AccountName=...;AccountKey=...`) becomes `***`;
/// - `encrypted+<url>` keeps its prefix and redacts the inner URL;
/// - a plain file path is returned unchanged.
///
/// The query and fragment are found by the `url` crate (by hand for a URL it refuses,
/// such as several hosts with ports); the host, port and path are shown as written.
///
/// ```
/// use certstore::redact;
///
/// assert_eq!(
///     redact("postgres://app:hunter2@db:5432/certs?namespace=prod"),
///     "postgres://app:***@db:5432/certs?namespace=prod"
/// );
/// assert_eq!(
///     redact("redis://:S3C/RET?x#y@cache:6379/0"),
///     "redis://:***@cache:6379/0"
/// );
/// assert_eq!(
///     redact("azblob://acct/certs?sig=abc&se=2030"),
///     "azblob://acct/certs?sig=***&se=***"
/// );
/// ```
pub fn redact(url: &str) -> String {
    if let Some(inner) = url.strip_prefix("encrypted+") {
        return format!("encrypted+{}", redact(inner));
    }
    let Some(parts) = Parts::split(url) else {
        if looks_like_connection_string(url) {
            return "***".to_owned();
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            return format!("sqlite:{}", redact_tail(rest));
        }
        return url.to_owned();
    };
    let mut out = format!("{}://", parts.scheme);
    match parts.credentials() {
        Some((Some(user), _)) => {
            let _ = write!(out, "{user}:***@");
        }
        Some((None, _)) => out.push_str("***@"),
        None => {}
    }
    // The host, port and path are shown as written (they hold no secret once the
    // user-info is gone); the parser normalises them (`http://h` becomes `http://h/`),
    // which would make the same URL print differently here and in the user's config.
    // The user-info is left out of what the parser sees: it is never shown, and an
    // unencoded password is exactly what it would misread.
    let end = parts.rest.find(['?', '#']).unwrap_or(parts.rest.len());
    out.push_str(&parts.rest[..end]);
    match url::Url::parse(&format!("{}://{}", parts.scheme, parts.rest)) {
        Ok(parsed) => {
            if let Some(query) = parsed.query() {
                out.push('?');
                out.push_str(&redact_query(query));
            }
            if parsed.fragment().is_some() {
                out.push_str("#***");
            }
        }
        // Not a URL the parser accepts (several hosts with ports, say): the query and
        // fragment found by hand.
        Err(_) => out.push_str(&redact_tail(&parts.rest[end..])),
    }
    out
}

/// Redacts the query and fragment of a path-and-query tail.
fn redact_tail(tail: &str) -> String {
    let (before_fragment, fragment) = match tail.find('#') {
        Some(at) => (&tail[..at], true),
        None => (tail, false),
    };
    let mut out = match before_fragment.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
        None => before_fragment.to_owned(),
    };
    if fragment {
        out.push_str("#***");
    }
    out
}

/// A query string (without `?`) with the values of parameters not known to be harmless
/// replaced by `***`.
fn redact_query(query: &str) -> String {
    let params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|param| {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (decode_component(name), Some(decode_component(value))),
                None => (decode_component(param), None),
            };
            let safe = SAFE_PARAMS.contains(&name.as_str());
            match value {
                Some(value) if safe && name == "endpoint" => format!("{name}={}", redact(&value)),
                Some(value) if safe => format!("{name}={value}"),
                Some(_) => format!("{name}=***"),
                None if safe => name,
                None => "***".to_owned(),
            }
        })
        .collect();
    params.join("&")
}

/// Decodes one query component as the `url` crate does (`%XX` and `+`).
fn decode_component(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

fn looks_like_connection_string(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["accountkey=", "sharedaccesssignature=", "password=", "sig="]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// Decodes `%XX` escapes (and nothing else); invalid escapes are kept as they are.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with the characters that end a URL's authority (`/`, `?`, `#`, `@`)
/// percent-encoded, so a strict parser reads a user-info part as it was meant.
pub(crate) fn encode_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '/' | '?' | '#' | '@' => {
                let _ = write!(out, "%{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let cases = [
            ("/var/lib/certstore", "/var/lib/certstore"),
            ("file:///var/lib/certstore", "file:///var/lib/certstore"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:pw@h:1/2", "redis://:***@h:1/2"),
            (
                "rediss://user:pw@h?namespace=a",
                "rediss://user:***@h?namespace=a",
            ),
            ("redis://pw@h/0", "redis://***@h/0"),
            ("redis://u:p@ss@h/0", "redis://u:***@h/0"),
            (
                "postgres://app:s3cret@db:5432/certs?sslmode=require&password=x",
                "postgres://app:***@db:5432/certs?sslmode=require&password=***",
            ),
            (
                "mysql://root:toor@127.0.0.1/c?table_prefix=t",
                "mysql://root:***@127.0.0.1/c?table_prefix=t",
            ),
            (
                "sqlite:///tmp/c.db?namespace=n",
                "sqlite:///tmp/c.db?namespace=n",
            ),
            ("sqlite:c.db?key=zz", "sqlite:c.db?key=***"),
            (
                "s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&secret_access_key=abc",
                "s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&secret_access_key=***",
            ),
            (
                "s3://b?endpoint=http%3A%2F%2Fu%3Apw%40h%3A9000",
                "s3://b?endpoint=http://u:***@h:9000",
            ),
            (
                "azblob://acct/certs/p?sv=2024&sig=AbC%2Bd&se=2030",
                "azblob://acct/certs/p?sv=***&sig=***&se=***",
            ),
            (
                "encrypted+postgres://a:b@h/d",
                "encrypted+postgres://a:***@h/d",
            ),
            ("redis://h/0#frag", "redis://h/0#***"),
            (
                "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
                "***",
            ),
        ];
        for (url, want) in cases {
            let got = redact(url);
            assert_eq!(got, want, "{url}");
            for secret in ["pw", "s3cret", "toor", "abc", "AbC", "c2VjcmV0", "zz"] {
                if !want.contains(secret) {
                    assert!(!got.contains(secret), "{secret} leaked from {url}: {got}");
                }
            }
        }
    }

    /// Passwords written without percent-encoding: the authority does not end at the
    /// first `/`, `?` or `#` inside the password, so no part of it is printed.
    #[test]
    fn unencoded_delimiters_in_passwords_stay_hidden() {
        let cases = [
            (
                "redis://:S3C/RETslash@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "redis://:a?b#c@h:1/2?namespace=n",
                "redis://:***@h:1/2?namespace=n",
            ),
            (
                "postgres://app:p@ss/w?rd#x@db:5432/certs?sslmode=require",
                "postgres://app:***@db:5432/certs?sslmode=require",
            ),
            (
                "mysql://root:a/b@c@[::1]:3306/c",
                "mysql://root:***@[::1]:3306/c",
            ),
            ("rediss://tok/en@h", "rediss://***@h"),
            (
                "postgres://u:x/y@h1:5432,h2:5433/db",
                "postgres://u:***@h1:5432,h2:5433/db",
            ),
            ("redis://:a/b@/0", "redis://:***@/0"),
            // An `@` in a query value hides what comes before it.
            (
                "postgres://u:p@h/db?application_name=me@x",
                "postgres://u:***@x",
            ),
            // Digits then `?`: a port and a query to a strict parser, and a leak.
            ("redis://app:1?b=x@h/0", "redis://app:***@h/0"),
            // An empty authority has no user-info in a path URL; other schemes name a
            // host, so a password may start with `/`.
            ("file:///var/a@b/c", "file:///var/a@b/c"),
            ("sqlite:///var/a@b.db", "sqlite:///var/a@b.db"),
            ("rediss:///tok@h/1", "rediss://***@h/1"),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
        }
    }

    #[test]
    fn parts_and_encoding() {
        let parts = Parts::split("redis://u:p/w@h:1/0").unwrap();
        assert_eq!(parts.scheme, "redis");
        assert_eq!(parts.userinfo, Some("u:p/w"));
        assert_eq!(parts.rest, "h:1/0");
        assert_eq!(parts.credentials(), Some((Some("u"), "p/w")));
        assert_eq!(
            Parts::split("redis://tok@h").unwrap().credentials(),
            Some((None, "tok"))
        );
        assert_eq!(Parts::split("redis://h/0").unwrap().userinfo, None);
        assert!(Parts::split("/plain/path").is_none());
        assert_eq!(encode_userinfo(":a/b?c#d@e%41"), ":a%2Fb%3Fc%23d%40e%41");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%3a"), "a/b:");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
