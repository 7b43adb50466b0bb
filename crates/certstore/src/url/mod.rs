//! Storage URLs: one string names a backend, where it is and how to reach it.
//!
//! [`StorageUrl`] and what a parsed URL tells; the backends and targets it names are in
//! `backend`, the parsing itself in `parse`.

mod backend;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::redact::{Parts, encode_userinfo, percent_decode, redact};

pub use backend::{Backend, Target};
use parse::query_pairs;

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

impl StorageUrl {
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
