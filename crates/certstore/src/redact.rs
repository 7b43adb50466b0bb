//! [`redact`]: a storage URL made safe to print.

/// Query parameters whose values are never secret and are shown as they are.
const SAFE_PARAMS: &[&str] = &[
    "namespace",
    "table_prefix",
    "endpoint",
    "region",
    "path_style",
    "sslmode",
    "ssl-mode",
    "mode",
    "protocol",
    "application_name",
    "connect_timeout",
];

/// `url` with every secret replaced by `***`, for error messages and logs.
///
/// - a password in the user-info part (`scheme://user:password@host`) becomes
///   `user:***`; a lone user-info part (`redis://secret@host`), which some schemes read
///   as a password, becomes `***`;
/// - the value of every query parameter that is not known to be harmless (a SAS
///   signature, a password, a key) becomes `***`; `namespace`, `endpoint`, `region`,
///   `path_style` and a few others are kept (an `endpoint` is itself redacted);
/// - a fragment becomes `#***`;
/// - an Azure connection string (`AccountName=...;AccountKey=...`) becomes `***`;
/// - `encrypted+<url>` keeps its prefix and redacts the inner URL;
/// - a plain file path is returned unchanged.
///
/// ```
/// use certstore::redact;
///
/// assert_eq!(
///     redact("postgres://app:hunter2@db:5432/certs?namespace=prod"),
///     "postgres://app:***@db:5432/certs?namespace=prod"
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
    let Some(at) = url.find("://") else {
        if looks_like_connection_string(url) {
            return "***".to_owned();
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            return format!("sqlite:{}", redact_tail(rest));
        }
        return url.to_owned();
    };
    let (scheme, rest) = (&url[..at + 3], &url[at + 3..]);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{}", &authority[at + 1..]),
                None => format!("***@{}", &authority[at + 1..]),
            }
        }
        None => authority.to_owned(),
    };
    format!("{scheme}{host}{}", redact_tail(tail))
}

/// Redacts the query and fragment of a path-and-query tail.
fn redact_tail(tail: &str) -> String {
    let (before_fragment, fragment) = match tail.find('#') {
        Some(at) => (&tail[..at], true),
        None => (tail, false),
    };
    let mut out = match before_fragment.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|param| match param.split_once('=') {
                    Some((name, value)) if SAFE_PARAMS.contains(&name) => {
                        if name == "endpoint" {
                            format!("{name}={}", redact(&percent_decode(value)))
                        } else {
                            format!("{name}={value}")
                        }
                    }
                    Some((name, _)) => format!("{name}=***"),
                    None if SAFE_PARAMS.contains(&param) => param.to_owned(),
                    None => "***".to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => before_fragment.to_owned(),
    };
    if fragment {
        out.push_str("#***");
    }
    out
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

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%3a"), "a/b:");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
