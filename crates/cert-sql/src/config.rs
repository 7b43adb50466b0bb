//! [`SqlConfig`]: table names, namespace, pool and timeout settings, and the checks that
//! keep table names safe to splice into SQL.

use std::fmt;
use std::time::Duration;

/// The SQL dialects this crate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL (11 or newer).
    Postgres,
    /// MySQL 8 or MariaDB 10.5 and newer.
    MySql,
    /// SQLite 3.35 or newer (the bundled library is recent).
    Sqlite,
}

impl Dialect {
    /// The backend's name as used in [`cert_core::Error`] variants: `"postgres"`,
    /// `"mysql"` or `"sqlite"`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
            Dialect::Sqlite => "sqlite",
        }
    }

    /// The dialect a connection URL names by its scheme (`postgres:`/`postgresql:`,
    /// `mysql:`/`mariadb:`, `sqlite:`).
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            "sqlite" => Some(Dialect::Sqlite),
            _ => None,
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The longest table name accepted, in bytes. The migrations table adds `_migrations`
/// (11 bytes) to the value table's name, which keeps every name within PostgreSQL's 63
/// and MySQL's 64 byte limits.
pub const MAX_TABLE_NAME_LEN: usize = 48;

/// The longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 128;

/// The default name of the table holding values.
pub const DEFAULT_KV_TABLE: &str = "certstore_kv";

/// The default name of the table holding locks.
pub const DEFAULT_LOCK_TABLE: &str = "certstore_locks";

/// How a [`SqlStorage`](crate::SqlStorage) names its tables, isolates its data and uses
/// its connection pool.
///
/// ```
/// use std::time::Duration;
/// use cert_sql::SqlConfig;
///
/// let config = SqlConfig::default()
///     .with_table_prefix("tls")            // tables tls_kv and tls_locks
///     .with_namespace("staging")           // keys and locks apart from other namespaces
///     .with_max_connections(16)
///     .with_acquire_timeout(Duration::from_secs(5));
/// assert_eq!(config.kv_table, "tls_kv");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlConfig {
    /// The table holding values; default `certstore_kv`. An identifier
    /// (`[A-Za-z_][A-Za-z0-9_]*`, at most [`MAX_TABLE_NAME_LEN`] bytes), since table names
    /// cannot be bound as parameters. Its migrations are recorded in
    /// `<kv_table>_migrations`.
    pub kv_table: String,
    /// The table holding locks; default `certstore_locks`, same rules as `kv_table`.
    pub lock_table: String,
    /// Every key and lock is stored under this namespace (a column of both tables, part
    /// of their primary keys), so several independent stores can share one pair of
    /// tables. Default `""`. At most [`MAX_NAMESPACE_LEN`] bytes, no control characters.
    pub namespace: String,
    /// Most connections the pool opens (when this crate builds the pool). Default 10.
    pub max_connections: u32,
    /// How long an operation waits for a free connection before failing with
    /// [`Error::Unavailable`](cert_core::Error::Unavailable). Default 10 s.
    pub acquire_timeout: Duration,
    /// Upper bound on one storage or lock operation, waiting for a connection included;
    /// past it the operation fails with
    /// [`Error::Unavailable`](cert_core::Error::Unavailable). `None` disables it.
    /// Default 30 s.
    pub operation_timeout: Option<Duration>,
    /// Whether to create or upgrade the tables when the storage is built. Default `true`.
    pub migrate: bool,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            kv_table: DEFAULT_KV_TABLE.to_owned(),
            lock_table: DEFAULT_LOCK_TABLE.to_owned(),
            namespace: String::new(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            operation_timeout: Some(Duration::from_secs(30)),
            migrate: true,
        }
    }
}

impl SqlConfig {
    /// Names the tables `<prefix>_kv` and `<prefix>_locks`.
    pub fn with_table_prefix(mut self, prefix: &str) -> Self {
        self.kv_table = format!("{prefix}_kv");
        self.lock_table = format!("{prefix}_locks");
        self
    }

    /// Names the value and lock tables.
    pub fn with_tables(
        mut self,
        kv_table: impl Into<String>,
        lock_table: impl Into<String>,
    ) -> Self {
        self.kv_table = kv_table.into();
        self.lock_table = lock_table.into();
        self
    }

    /// Stores every key and lock under `namespace`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the pool's maximum number of connections.
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets how long to wait for a free connection.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets (or with `None` removes) the bound on one operation.
    pub fn with_operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Chooses whether to create or upgrade the tables when the storage is built.
    pub fn with_migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The name of the table recording applied migrations.
    pub fn migrations_table(&self) -> String {
        format!("{}_migrations", self.kv_table)
    }

    /// Checks table names and namespace.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check_identifier(&self.kv_table)?;
        check_identifier(&self.lock_table)?;
        if self.kv_table.eq_ignore_ascii_case(&self.lock_table) {
            return Err(ConfigError(format!(
                "the value and lock tables must differ (both are {:?})",
                self.kv_table
            )));
        }
        if self.namespace.len() > MAX_NAMESPACE_LEN {
            return Err(ConfigError(format!(
                "namespace is longer than {MAX_NAMESPACE_LEN} bytes"
            )));
        }
        if self.namespace.chars().any(char::is_control) {
            return Err(ConfigError("namespace contains a control character".into()));
        }
        Ok(())
    }
}

/// Checks that `name` is a plain SQL identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_TABLE_NAME_LEN`] bytes. Only such names are ever spliced into SQL text.
pub fn check_identifier(name: &str) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !rest_ok {
        return Err(ConfigError(format!(
            "table name {name:?} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)"
        )));
    }
    if name.len() > MAX_TABLE_NAME_LEN {
        return Err(ConfigError(format!(
            "table name {name:?} is longer than {MAX_TABLE_NAME_LEN} bytes"
        )));
    }
    Ok(())
}

/// A setting that cannot be used; reported as the source of
/// [`Error::Backend`](cert_core::Error::Backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid SQL storage configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["certstore_kv", "_x", "A1", &"a".repeat(MAX_TABLE_NAME_LEN)] {
            assert!(check_identifier(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "kv; DROP TABLE x",
            "\"kv\"",
            "k`v",
            "é",
            &"a".repeat(MAX_TABLE_NAME_LEN + 1),
        ] {
            assert!(check_identifier(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_checks() {
        assert!(SqlConfig::default().validate().is_ok());
        assert!(
            SqlConfig::default()
                .with_table_prefix("x y")
                .validate()
                .is_err()
        );
        assert!(
            SqlConfig::default()
                .with_tables("a", "A")
                .validate()
                .is_err()
        );
        assert!(
            SqlConfig::default()
                .with_namespace("a\0b")
                .validate()
                .is_err()
        );
        let long = "n".repeat(MAX_NAMESPACE_LEN + 1);
        assert!(
            SqlConfig::default()
                .with_namespace(long)
                .validate()
                .is_err()
        );
        let config = SqlConfig::default().with_table_prefix("p");
        assert_eq!(
            (config.kv_table.as_str(), config.lock_table.as_str()),
            ("p_kv", "p_locks")
        );
        assert_eq!(config.migrations_table(), "p_kv_migrations");
        assert_eq!(
            Dialect::from_url("postgresql://h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::from_url("MARIADB://h/db"), Some(Dialect::MySql));
        assert_eq!(Dialect::from_url("sqlite::memory:"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("redis://h"), None);
        assert_eq!(Dialect::from_url("nothing"), None);
    }
}
