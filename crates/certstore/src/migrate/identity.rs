//! [`StorageIdentity`]: what a storage URL names, so that two spellings of one storage are
//! known to be the same.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{StorageUrl, Target};

/// What a storage URL names, as far as the URL tells: two URLs with equal identities
/// reach the same keys, however they are spelled (`encrypted+` or not, a relative path or
/// a link to the directory, a password or a default port written or left out, driver
/// parameters). Host names are compared as written, except that every loopback name and
/// address counts as one.
///
/// ```
/// use certstore::StorageUrl;
/// use certstore::migrate::StorageIdentity;
///
/// let a = StorageUrl::parse("encrypted+redis://:pw@127.0.0.1/0?namespace=prod").unwrap();
/// let b = StorageUrl::parse("redis://localhost:6379?namespace=prod").unwrap();
/// assert_eq!(StorageIdentity::of(&a), StorageIdentity::of(&b));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageIdentity {
    /// A directory, canonicalized (its missing tail appended to its existing part).
    File {
        /// The directory.
        path: PathBuf,
    },
    /// A Redis database and a namespace in it.
    Redis {
        /// The server's host.
        host: String,
        /// The server's port.
        port: u16,
        /// The database number.
        db: i64,
        /// The namespace.
        namespace: String,
    },
    /// Tables in a PostgreSQL or MySQL database and a namespace in them.
    Sql {
        /// `postgres` or `mysql`.
        backend: &'static str,
        /// The server's host (or Unix socket path).
        host: String,
        /// The server's port.
        port: u16,
        /// The database.
        database: String,
        /// The table holding values (from the table prefix).
        table: String,
        /// The namespace.
        namespace: String,
    },
    /// Tables in an SQLite database file and a namespace in them.
    Sqlite {
        /// The database file, canonicalized.
        path: PathBuf,
        /// The table holding values.
        table: String,
        /// The namespace.
        namespace: String,
    },
    /// A prefix of an S3 bucket.
    S3 {
        /// The endpoint (`None`: AWS).
        endpoint: Option<String>,
        /// The bucket.
        bucket: String,
        /// The key prefix, without surrounding slashes.
        prefix: String,
    },
    /// A prefix of an Azure Blob Storage container.
    Azure {
        /// The account's blob endpoint.
        endpoint: String,
        /// The storage account.
        account: String,
        /// The container.
        container: String,
        /// The blob prefix, without surrounding slashes.
        prefix: String,
    },
    /// A URL whose parts cannot be read here (an in-memory SQLite database, a backend not
    /// compiled in): only the same URL text, redacted, is known to be the same storage.
    Other {
        /// The URL, redacted, without `encrypted+`.
        url: String,
    },
}

impl StorageIdentity {
    /// The identity of the storage `url` names. Reads the file system (to canonicalize
    /// paths) and nothing else.
    pub fn of(url: &StorageUrl) -> Self {
        let other = || StorageIdentity::Other {
            url: url
                .redacted()
                .trim_start_matches("encrypted+")
                .trim()
                .to_owned(),
        };
        match url.target() {
            Target::File { path } => StorageIdentity::File {
                path: canonical(path),
            },
            Target::Redis { url, namespace } => {
                redis_identity(url, namespace).unwrap_or_else(other)
            }
            Target::Sql {
                url,
                namespace,
                table_prefix,
            } => sql_identity(url, namespace, table_prefix.as_deref()).unwrap_or_else(other),
            Target::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => StorageIdentity::S3 {
                endpoint: endpoint.as_deref().map(normal_endpoint),
                bucket: bucket.clone(),
                prefix: prefix.trim_matches('/').to_owned(),
            },
            Target::Azure {
                account,
                container,
                prefix,
                endpoint,
            } => StorageIdentity::Azure {
                endpoint: normal_endpoint(
                    &endpoint
                        .clone()
                        .unwrap_or_else(|| format!("https://{account}.blob.core.windows.net")),
                ),
                account: account.clone(),
                container: container.clone(),
                prefix: prefix.trim_matches('/').to_owned(),
            },
        }
    }
}

/// Whether `a` and `b` name the same storage (equal [`StorageIdentity`]).
pub fn same_storage(a: &StorageUrl, b: &StorageUrl) -> bool {
    StorageIdentity::of(a) == StorageIdentity::of(b)
}

/// `path` made absolute with links resolved; a missing tail (a directory a migration
/// creates) is appended to its longest existing ancestor, resolved.
fn canonical(path: &Path) -> PathBuf {
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    let mut base = absolute.clone();
    let mut missing: Vec<OsString> = Vec::new();
    loop {
        if let Ok(mut real) = base.canonicalize() {
            for part in missing.iter().rev() {
                if part == ".." {
                    real.pop();
                } else if part != "." {
                    real.push(part);
                }
            }
            return real;
        }
        let Some(last) = base.components().next_back() else {
            return absolute;
        };
        missing.push(last.as_os_str().to_owned());
        if !base.pop() {
            return absolute;
        }
    }
}

/// A host as compared: lower case, without brackets or a final dot, and every loopback
/// name or address as `localhost`.
fn normal_host(host: &str) -> String {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        "localhost".to_owned()
    } else {
        host
    }
}

/// An endpoint URL as compared: lower case, without a final slash.
fn normal_endpoint(endpoint: &str) -> String {
    endpoint.trim_end_matches('/').to_ascii_lowercase()
}

fn redis_identity(url: &str, namespace: &str) -> Option<StorageIdentity> {
    let parsed = url::Url::parse(url).ok()?;
    let db = match parsed.path().trim_matches('/') {
        "" => 0,
        db => db.parse().ok()?,
    };
    Some(StorageIdentity::Redis {
        host: normal_host(parsed.host_str()?),
        port: parsed.port().unwrap_or(6379),
        db,
        namespace: namespace.to_owned(),
    })
}

#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(unused_variables)
)]
fn sql_identity(url: &str, namespace: &str, table_prefix: Option<&str>) -> Option<StorageIdentity> {
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    {
        use std::str::FromStr;
        // The table holding values, named as the storage names it.
        let mut config = cert_sql::SqlConfig::default();
        if let Some(prefix) = table_prefix {
            config = config.with_table_prefix(prefix);
        }
        let table = config.kv_table;
        let namespace = namespace.to_owned();
        let scheme = url
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => {
                let options = cert_sql::sqlx::postgres::PgConnectOptions::from_str(url).ok()?;
                let host = match options.get_socket() {
                    Some(socket) => canonical(socket).display().to_string(),
                    None => normal_host(options.get_host()),
                };
                // PostgreSQL's default database is the user's name.
                let database = options
                    .get_database()
                    .unwrap_or(options.get_username())
                    .to_owned();
                Some(StorageIdentity::Sql {
                    backend: "postgres",
                    host,
                    port: options.get_port(),
                    database,
                    table,
                    namespace,
                })
            }
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => {
                let options = cert_sql::sqlx::mysql::MySqlConnectOptions::from_str(url).ok()?;
                let host = match options.get_socket() {
                    Some(socket) => canonical(socket).display().to_string(),
                    None => normal_host(options.get_host()),
                };
                Some(StorageIdentity::Sql {
                    backend: "mysql",
                    host,
                    port: options.get_port(),
                    database: options.get_database().unwrap_or_default().to_owned(),
                    table,
                    namespace,
                })
            }
            #[cfg(feature = "sqlite")]
            "sqlite" => {
                // `None` for an in-memory database: no file to compare.
                let [path, ..] = cert_sql::sqlite_database_files(url)?;
                Some(StorageIdentity::Sqlite {
                    path: canonical(&path),
                    table,
                    namespace,
                })
            }
            _ => None,
        }
    }
    #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
    None
}

#[cfg(test)]
mod tests;
