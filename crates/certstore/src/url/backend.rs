//! The backends a storage URL can name, and where a parsed URL points.

use std::fmt;
use std::path::PathBuf;

use crate::redact::redact;

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

/// Where a parsed storage URL points (see [`StorageUrl`](super::StorageUrl)).
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
