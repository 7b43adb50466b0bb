//! Storage URLs: one string names a backend, where it is and how to reach it.

use std::fmt;
use std::path::PathBuf;

use crate::redact::{Parts, encode_userinfo, percent_decode, redact};

/// The backend a storage URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// A directory: `file:///path` or a bare path.
    File,
    /// Redis or Valkey: `redis://`, `rediss://`.
    Redis,
    /// PostgreSQL: `postgres://`, `postgresql://`.
    Postgres,
    /// MySQL or MariaDB: `mysql://`, `mariadb://`.
    MySql,
    /// SQLite: `sqlite://path`, `sqlite:path`.
    Sqlite,
    /// S3 or an S3-compatible store: `s3://bucket/prefix`.
    S3,
    /// Azure Blob Storage: `azblob://account/container/prefix`.
    Azure,
}

impl Backend {
    /// The backend's short name (`file`, `redis`, `postgres`, `mysql`, `sqlite`, `s3`,
    /// `azure`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Redis => "redis",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
            Backend::Sqlite => "sqlite",
            Backend::S3 => "s3",
            Backend::Azure => "azure",
        }
    }

    /// The cargo feature of the `certstore` crate that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Backend::MySql => "mysql",
            other => other.name(),
        }
    }

    /// Whether this build of the crate includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::File => cfg!(feature = "file"),
            Backend::Redis => cfg!(feature = "redis"),
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::MySql => cfg!(feature = "mysql"),
            Backend::Sqlite => cfg!(feature = "sqlite"),
            Backend::S3 => cfg!(feature = "s3"),
            Backend::Azure => cfg!(feature = "azure"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a parsed storage URL points (see [`StorageUrl`]).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// A directory.
    File {
        /// The directory.
        path: PathBuf,
    },
    /// A Redis server.
    Redis {
        /// The URL handed to the Redis client (certstore's own parameters removed).
        url: String,
        /// The namespace (`?namespace=`, default `certstore`).
        namespace: String,
    },
    /// A SQL database.
    Sql {
        /// The URL handed to the database driver (certstore's own parameters removed).
        url: String,
        /// The namespace (`?namespace=`, default empty).
        namespace: String,
        /// The table prefix (`?table_prefix=`: tables `<p>_kv` and `<p>_locks`).
        table_prefix: Option<String>,
    },
    /// An S3 bucket.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (`""` for the whole bucket).
        prefix: String,
        /// A custom endpoint (`?endpoint=`).
        endpoint: Option<String>,
        /// The region (`?region=`).
        region: Option<String>,
        /// Path-style addressing (`?path_style=true`).
        path_style: bool,
    },
    /// An Azure Blob Storage container.
    Azure {
        /// The storage account.
        account: String,
        /// The container.
        container: String,
        /// The blob prefix (`""` for the whole container).
        prefix: String,
        /// The account's blob endpoint (`?endpoint=`; default
        /// `https://<account>.blob.core.windows.net`).
        endpoint: Option<String>,
    },
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::File { path } => f.debug_struct("File").field("path", path).finish(),
            Target::Redis { url, namespace } => f
                .debug_struct("Redis")
                .field("url", &redact(url))
                .field("namespace", namespace)
                .finish(),
            Target::Sql {
                url,
                namespace,
                table_prefix,
            } => f
                .debug_struct("Sql")
                .field("url", &redact(url))
                .field("namespace", namespace)
                .field("table_prefix", table_prefix)
                .finish(),
            Target::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                path_style,
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field("endpoint", &endpoint.as_deref().map(redact))
                .field("region", region)
                .field("path_style", path_style)
                .finish(),
            Target::Azure {
                account,
                container,
                prefix,
                endpoint,
            } => f
                .debug_struct("Azure")
                .field("account", account)
                .field("container", container)
                .field("prefix", prefix)
                .field("endpoint", &endpoint.as_deref().map(redact))
                .finish(),
        }
    }
}

/// A parsed storage URL.
///
/// | URL | backend |
/// |---|---|
/// | `/var/lib/certstore`, `./certs`, `file:///var/lib/certstore` | directory ([`cert_file`-style](Backend::File)) |
/// | `redis://[user:password@]host[:port][/db][?namespace=NS]`, `rediss://...` | Redis, TLS for `rediss` |
/// | `postgres://user:password@host/db[?namespace=NS&table_prefix=P]` | PostgreSQL |
/// | `mysql://...`, `mariadb://...` (same parameters) | MySQL / MariaDB |
/// | `sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite:rel.db` (same parameters) | SQLite |
/// | `s3://bucket[/prefix][?endpoint=URL&region=R&path_style=true]` | S3 and compatible stores |
/// | `azblob://account/container[/prefix][?endpoint=URL]` | Azure Blob Storage |
/// | `encrypted+<any of the above>` | the same, every value sealed (key from `CERTSTORE_KEY` or a key file) |
///
/// Parameters not listed are passed to the Redis client or SQL driver for those
/// backends (`sslmode=require`, ...), and refused for S3 and Azure. `Debug` and
/// [`redacted`](StorageUrl::redacted) never show secrets.
///
/// A password may be written without percent-encoding, even with `/`, `?`, `#` or `@`:
/// the user-info part ends at the last `@` (see [`redact`]), and the URL handed to the
/// driver has it encoded. An `@` elsewhere (in a query value) must then be written
/// `%40`.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageUrl {
    raw: String,
    encrypted: bool,
    target: Target,
}

impl fmt::Debug for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageUrl")
            .field("url", &self.redacted())
            .field("encrypted", &self.encrypted)
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Why a storage URL was refused. Messages show the URL [redacted](redact).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The scheme is not one this crate knows.
    #[error(
        "unknown storage URL scheme {scheme:?} in {url}: use a path, file://, redis://, rediss://, postgres://, mysql://, mariadb://, sqlite://, s3://, azblob:// or encrypted+<url>"
    )]
    UnknownScheme {
        /// The scheme.
        scheme: String,
        /// The URL, redacted.
        url: String,
    },
    /// The URL's shape is wrong for its scheme.
    #[error("invalid storage URL {url}: {reason}")]
    Invalid {
        /// The URL, redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(raw: &str, reason: impl Into<String>) -> UrlError {
    UrlError::Invalid {
        url: redact(raw),
        reason: reason.into(),
    }
}

/// A query string split into decoded `(name, value)` pairs, in order.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn parse_bool(raw: &str, name: &str, value: &str) -> Result<bool, UrlError> {
    match value.to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(
            raw,
            format!("{name} must be true or false, not {value:?}"),
        )),
    }
}

/// Removes certstore's own parameters (`names`) from `url`'s query; returns the URL
/// without them and their values.
///
/// The user-info part ends at the last `@` (see [`redact`]) and is handed on with `/`,
/// `?`, `#` and `@` percent-encoded, so the driver reads an unencoded password as it was
/// meant; the query starts at the first `?` after it. A URL that a strict parser reads
/// the same way comes out unchanged.
fn take_params(url: &str, names: &[&str]) -> (String, Vec<(String, String)>) {
    let (head, rest) = match Parts::split(url) {
        Some(Parts {
            scheme,
            userinfo: Some(userinfo),
            rest,
        }) => (format!("{scheme}://{}@", encode_userinfo(userinfo)), rest),
        Some(Parts { scheme, rest, .. }) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, query),
        None => return (format!("{head}{rest}"), Vec::new()),
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let name = percent_decode(part.split_once('=').map_or(part, |(k, _)| k));
        if names.contains(&name.as_str()) {
            let value = part.split_once('=').map_or("", |(_, v)| v);
            taken.push((name, percent_decode(value)));
        } else {
            kept.push(part);
        }
    }
    let url = if kept.is_empty() {
        format!("{head}{base}")
    } else {
        format!("{head}{base}?{}", kept.join("&"))
    };
    (url, taken)
}

fn check_prefix(raw: &str, prefix: &str) -> Result<(), UrlError> {
    cert_core::validate_prefix(prefix)
        .map_err(|err| invalid(raw, format!("prefix {prefix:?}: {err}")))
}

impl StorageUrl {
    /// Parses `url` (see the type docs for the forms accepted). Sends nothing anywhere.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(invalid(url, "it is empty"));
        }
        if let Some(inner) = trimmed.strip_prefix("encrypted+") {
            let mut parsed = Self::parse(inner)?;
            if parsed.encrypted {
                return Err(invalid(url, "encrypted+ appears twice"));
            }
            parsed.encrypted = true;
            parsed.raw = trimmed.to_owned();
            return Ok(parsed);
        }
        let target = Self::parse_target(trimmed)?;
        Ok(StorageUrl {
            raw: trimmed.to_owned(),
            encrypted: false,
            target,
        })
    }

    fn parse_target(raw: &str) -> Result<Target, UrlError> {
        let Some((scheme, rest)) = raw.split_once("://") else {
            if raw.starts_with("sqlite:") {
                return Self::parse_sql(raw);
            }
            return Ok(Target::File {
                path: PathBuf::from(raw),
            });
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = percent_decode(rest.split(['?', '#']).next().unwrap_or_default());
                if path.is_empty() {
                    return Err(invalid(raw, "no path after file://"));
                }
                Ok(Target::File {
                    path: PathBuf::from(path),
                })
            }
            "redis" | "rediss" => {
                let (url, params) = take_params(raw, &["namespace"]);
                let namespace = params
                    .into_iter()
                    .find(|(k, _)| k == "namespace")
                    .map_or_else(|| "certstore".to_owned(), |(_, v)| v);
                if namespace.is_empty() || namespace.contains(['{', '}']) {
                    return Err(invalid(
                        raw,
                        "namespace must be non-empty and without braces",
                    ));
                }
                Ok(Target::Redis { url, namespace })
            }
            "postgres" | "postgresql" | "mysql" | "mariadb" | "sqlite" => Self::parse_sql(raw),
            "s3" => Self::parse_s3(raw, rest),
            "azblob" => Self::parse_azure(raw, rest),
            other => Err(UrlError::UnknownScheme {
                scheme: other.to_owned(),
                url: redact(raw),
            }),
        }
    }

    fn parse_sql(raw: &str) -> Result<Target, UrlError> {
        let (url, params) = take_params(raw, &["namespace", "table_prefix"]);
        let mut namespace = String::new();
        let mut table_prefix = None;
        for (name, value) in params {
            match name.as_str() {
                "namespace" => namespace = value,
                _ => {
                    cert_sql_identifier(raw, &value)?;
                    table_prefix = Some(value);
                }
            }
        }
        Ok(Target::Sql {
            url,
            namespace,
            table_prefix,
        })
    }

    fn parse_s3(raw: &str, rest: &str) -> Result<Target, UrlError> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(invalid(raw, "no bucket: use s3://bucket/prefix"));
        }
        let prefix = percent_decode(prefix);
        check_prefix(raw, &prefix)?;
        let (mut endpoint, mut region, mut path_style) = (None, None, false);
        for (name, value) in query_pairs(query) {
            match name.as_str() {
                "endpoint" => endpoint = Some(value),
                "region" => region = Some(value),
                "path_style" => path_style = parse_bool(raw, &name, &value)?,
                other => {
                    return Err(invalid(
                        raw,
                        format!(
                            "unknown parameter {other:?} (known: endpoint, region, path_style; credentials come from the AWS environment)"
                        ),
                    ));
                }
            }
        }
        Ok(Target::S3 {
            bucket: bucket.to_owned(),
            prefix,
            endpoint,
            region,
            path_style,
        })
    }

    fn parse_azure(raw: &str, rest: &str) -> Result<Target, UrlError> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parts = path.trim_end_matches('/').splitn(3, '/');
        let account = parts.next().unwrap_or_default();
        let container = parts.next().unwrap_or_default();
        let prefix = percent_decode(parts.next().unwrap_or_default());
        if account.is_empty() || container.is_empty() {
            return Err(invalid(raw, "use azblob://account/container[/prefix]"));
        }
        check_prefix(raw, &prefix)?;
        let mut endpoint = None;
        for (name, value) in query_pairs(query) {
            match name.as_str() {
                "endpoint" => endpoint = Some(value),
                other => {
                    return Err(invalid(
                        raw,
                        format!(
                            "unknown parameter {other:?} (known: endpoint; credentials come from AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_KEY)"
                        ),
                    ));
                }
            }
        }
        Ok(Target::Azure {
            account: account.to_owned(),
            container: container.to_owned(),
            prefix,
            endpoint,
        })
    }

    /// The backend the URL names.
    pub fn backend(&self) -> Backend {
        match &self.target {
            Target::File { .. } => Backend::File,
            Target::Redis { .. } => Backend::Redis,
            Target::Sql { url, .. } => {
                let scheme = url.split(':').next().unwrap_or_default();
                match scheme.to_ascii_lowercase().as_str() {
                    "postgres" | "postgresql" => Backend::Postgres,
                    "mysql" | "mariadb" => Backend::MySql,
                    _ => Backend::Sqlite,
                }
            }
            Target::S3 { .. } => Backend::S3,
            Target::Azure { .. } => Backend::Azure,
        }
    }

    /// Whether values are sealed (`encrypted+`).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// Where the URL points.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The URL with secrets replaced by `***` (see [`redact`]).
    pub fn redacted(&self) -> String {
        redact(&self.raw)
    }

    /// The secret parts of the URL (a password, query values that are not known to be
    /// harmless), so a caller can scrub them from messages produced by client libraries.
    ///
    /// A password is listed as written, percent-decoded and in the form handed to the
    /// driver (see [`redact`] for where the user-info part ends).
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let body = self.raw.strip_prefix("encrypted+").unwrap_or(&self.raw);
        let rest = match Parts::split(body) {
            Some(parts) => {
                if let Some((_, secret)) = parts.credentials()
                    && !secret.is_empty()
                {
                    out.push(secret.to_owned());
                    out.push(percent_decode(secret));
                    out.push(encode_userinfo(secret));
                }
                parts.rest
            }
            None => body,
        };
        if let Some((_, query)) = rest.split_once('?') {
            let redacted = redact(body);
            for (_, value) in query_pairs(query) {
                if value.len() >= 3 && !redacted.contains(&value) {
                    out.push(value);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The hosts a Redis or SQL URL connects to (PostgreSQL allows several, comma
    /// separated), without ports; empty for other backends and for SQLite or a socket
    /// path given in the query.
    pub fn hosts(&self) -> Vec<String> {
        let url = match &self.target {
            Target::Redis { url, .. } => url,
            Target::Sql { url, .. } if self.backend() != Backend::Sqlite => url,
            _ => return Vec::new(),
        };
        // The driver URL's user-info is percent-encoded (see `take_params`), so its
        // authority ends at the first `/`, `?` or `#`.
        if let Ok(parsed) = ::url::Url::parse(url) {
            return match parsed.host() {
                Some(::url::Host::Domain(host)) => host.split(',').map(percent_decode).collect(),
                Some(::url::Host::Ipv4(ip)) => vec![ip.to_string()],
                Some(::url::Host::Ipv6(ip)) => vec![ip.to_string()],
                None => Vec::new(),
            }
            .into_iter()
            .filter(|h| !h.is_empty())
            .collect();
        }
        // Several hosts with ports, which the parser refuses: split them by hand.
        let after = url.split_once("://").map_or("", |(_, after)| after);
        let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        hosts
            .split(',')
            .map(|one| match one.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default().to_owned(),
                None => percent_decode(one.rsplit_once(':').map_or(one, |(h, _)| h)),
            })
            .filter(|h| !h.is_empty())
            .collect()
    }

    /// The driver parameters of a Redis or SQL URL (its query, certstore's own
    /// parameters removed), decoded; empty for other backends.
    pub fn driver_params(&self) -> Vec<(String, String)> {
        let url = match &self.target {
            Target::Redis { url, .. } | Target::Sql { url, .. } => url,
            _ => return Vec::new(),
        };
        let rest = Parts::split(url).map_or(url.as_str(), |parts| parts.rest);
        let query = rest.split_once('?').map_or("", |(_, q)| q);
        let query = query.split('#').next().unwrap_or_default();
        query_pairs(query)
    }
}

fn cert_sql_identifier(raw: &str, prefix: &str) -> Result<(), UrlError> {
    let mut chars = prefix.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || prefix.len() > 40 {
        return Err(invalid(
            raw,
            format!(
                "table_prefix {prefix:?} must be an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 40 bytes)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        StorageUrl::parse(url).unwrap().target().clone()
    }

    #[test]
    fn paths_and_files() {
        assert_eq!(
            target("/var/lib/certstore"),
            Target::File {
                path: "/var/lib/certstore".into()
            }
        );
        assert_eq!(
            target("file:///var/lib/cert%20store"),
            Target::File {
                path: "/var/lib/cert store".into()
            }
        );
        assert_eq!(
            target(".certstore"),
            Target::File {
                path: ".certstore".into()
            }
        );
        assert!(StorageUrl::parse("file://").is_err());
        assert!(StorageUrl::parse("  ").is_err());
    }

    #[test]
    fn redis_and_sql_keep_driver_parameters() {
        assert_eq!(
            target("redis://:pw@h:6379/2?namespace=prod&protocol=resp3"),
            Target::Redis {
                url: "redis://:pw@h:6379/2?protocol=resp3".into(),
                namespace: "prod".into()
            }
        );
        assert_eq!(
            target("rediss://h"),
            Target::Redis {
                url: "rediss://h".into(),
                namespace: "certstore".into()
            }
        );
        assert_eq!(
            target("postgres://u:p@h/db?sslmode=require&namespace=n&table_prefix=tls"),
            Target::Sql {
                url: "postgres://u:p@h/db?sslmode=require".into(),
                namespace: "n".into(),
                table_prefix: Some("tls".into())
            }
        );
        let url = StorageUrl::parse("sqlite:certs.db").unwrap();
        assert_eq!(url.backend(), Backend::Sqlite);
        assert_eq!(
            StorageUrl::parse("mariadb://h/d").unwrap().backend(),
            Backend::MySql
        );
        assert!(StorageUrl::parse("mysql://h/d?table_prefix=a;drop").is_err());
        assert!(StorageUrl::parse("redis://h?namespace={x}").is_err());
    }

    #[test]
    fn s3_and_azure() {
        assert_eq!(
            target(
                "s3://certs/prod/eu?endpoint=http://127.0.0.1:9000&region=us-east-1&path_style=true"
            ),
            Target::S3 {
                bucket: "certs".into(),
                prefix: "prod/eu".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("us-east-1".into()),
                path_style: true
            }
        );
        assert_eq!(
            target("s3://certs"),
            Target::S3 {
                bucket: "certs".into(),
                prefix: String::new(),
                endpoint: None,
                region: None,
                path_style: false
            }
        );
        assert_eq!(
            target(
                "azblob://devstoreaccount1/certs/a/b?endpoint=http://127.0.0.1:10000/devstoreaccount1"
            ),
            Target::Azure {
                account: "devstoreaccount1".into(),
                container: "certs".into(),
                prefix: "a/b".into(),
                endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into())
            }
        );
        for bad in [
            "s3://",
            "s3://b?path_style=maybe",
            "s3://b?secret=1",
            "s3://b/../x",
            "azblob://acct",
            "azblob://acct/c?sig=x",
        ] {
            assert!(
                matches!(StorageUrl::parse(bad), Err(UrlError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn encrypted_and_unknown() {
        let url = StorageUrl::parse("encrypted+redis://:pw@h/0").unwrap();
        assert!(url.is_encrypted());
        assert_eq!(url.backend(), Backend::Redis);
        assert_eq!(url.redacted(), "encrypted+redis://:***@h/0");
        assert!(StorageUrl::parse("encrypted+encrypted+/x").is_err());
        let err = StorageUrl::parse("ftp://user:pw@h/x").unwrap_err();
        assert!(matches!(err, UrlError::UnknownScheme { ref scheme, .. } if scheme == "ftp"));
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn debug_and_errors_hide_secrets() {
        let url = StorageUrl::parse("postgres://app:hunter2@db/c?namespace=n").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!format!("{:?}", url.target()).contains("hunter2"));
        assert!(!url.to_string().contains("hunter2"));
        assert_eq!(url.secrets(), vec!["hunter2".to_owned()]);
        let err = StorageUrl::parse("s3://b?endpoint=http://u:hunter2@h&bogus=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let sas = StorageUrl::parse("postgres://h/c?password=topsecret").unwrap();
        assert!(sas.secrets().contains(&"topsecret".to_owned()));
    }

    /// A password with an unencoded `/`, `?` or `#`: the old code cut the user-info
    /// short, printed the rest and listed only a fragment of it as a secret.
    #[test]
    fn unencoded_passwords_are_read_as_meant() {
        let url = StorageUrl::parse("redis://:S3C/RET?x#y@127.0.0.1:6379/0?namespace=p").unwrap();
        assert_eq!(
            url.target(),
            &Target::Redis {
                url: "redis://:S3C%2FRET%3Fx%23y@127.0.0.1:6379/0".into(),
                namespace: "p".into()
            }
        );
        assert_eq!(url.to_string(), "redis://:***@127.0.0.1:6379/0?namespace=p");
        assert!(url.secrets().contains(&"S3C/RET?x#y".to_owned()));
        assert!(url.secrets().contains(&"S3C%2FRET%3Fx%23y".to_owned()));
        assert_eq!(url.hosts(), vec!["127.0.0.1".to_owned()]);
        let sql =
            StorageUrl::parse("postgres://app:a?b@db/c?sslmode=require&table_prefix=t").unwrap();
        assert_eq!(
            sql.target(),
            &Target::Sql {
                url: "postgres://app:a%3Fb@db/c?sslmode=require".into(),
                namespace: String::new(),
                table_prefix: Some("t".into())
            }
        );
        assert_eq!(
            sql.driver_params(),
            vec![("sslmode".to_owned(), "require".to_owned())]
        );
        // A password cut short by a strict parser (the path would hold an `@`).
        assert_eq!(
            target("redis://u:123/x@h/0"),
            Target::Redis {
                url: "redis://u:123%2Fx@h/0".into(),
                namespace: "certstore".into()
            }
        );
    }

    /// The last `@` ends the user-info, so an `@` in a query value must be written
    /// `%40`; so written, the URL reaches the driver unchanged.
    #[test]
    fn an_at_sign_in_a_query_value_is_encoded() {
        let url =
            StorageUrl::parse("postgres://u:pw@db/c?application_name=me%40x&namespace=n").unwrap();
        assert_eq!(
            url.target(),
            &Target::Sql {
                url: "postgres://u:pw@db/c?application_name=me%40x".into(),
                namespace: "n".into(),
                table_prefix: None
            }
        );
        assert_eq!(url.hosts(), vec!["db".to_owned()]);
        assert_eq!(url.secrets(), vec!["pw".to_owned()]);
        let unencoded = StorageUrl::parse("postgres://u:pw@db/c?application_name=me@x").unwrap();
        assert_eq!(unencoded.to_string(), "postgres://u:***@x");
        assert!(!format!("{unencoded:?}").contains("pw"));
    }

    #[test]
    fn hosts_of_network_backends() {
        let hosts = |url: &str| StorageUrl::parse(url).unwrap().hosts();
        assert_eq!(
            hosts("rediss://u:p@cache.internal:6380"),
            vec!["cache.internal"]
        );
        assert_eq!(hosts("mysql://r:p@[::1]:3306/c"), vec!["::1"]);
        assert_eq!(
            hosts("postgres://u:p@h1:5432,h2:5433/db"),
            vec!["h1".to_owned(), "h2".to_owned()]
        );
        assert!(hosts("sqlite:///tmp/x.db").is_empty());
        assert!(hosts("s3://bucket").is_empty());
        assert!(hosts("postgres:///db?host=/run/postgresql").is_empty());
    }
}
