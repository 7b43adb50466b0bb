//! The schema, as embedded versioned migrations, one list per dialect.
//!
//! Every dialect has the same two tables (names configurable, see
//! [`SqlConfig`](crate::SqlConfig)):
//!
//! | table | columns | primary key |
//! |---|---|---|
//! | values (`certstore_kv`) | `ns`, `name`, `data`, `size`, `modified` | `(ns, name)` |
//! | locks (`certstore_locks`) | `ns`, `name`, `token`, `expires` | `(ns, name)` |
//!
//! Keys compare bytewise, as the storage contract's ordering requires: PostgreSQL
//! `text COLLATE "C"`, MySQL/MariaDB `VARBINARY`, SQLite `TEXT` with its default `BINARY`
//! collation. Values are `bytea` / `LONGBLOB` / `BLOB`; `size` is the value's length and
//! `modified` the writer's clock in microseconds since the Unix epoch. Lock expiry is the
//! database server's time: `timestamptz` (PostgreSQL), `DATETIME(6)` in UTC
//! (MySQL/MariaDB), milliseconds since the Unix epoch (SQLite).
//!
//! Applied versions are recorded in `<kv_table>_migrations`. Migrating is idempotent and
//! safe when many processes start at once: PostgreSQL runs it in one transaction under
//! `pg_advisory_xact_lock`, MySQL/MariaDB under `GET_LOCK` on one connection, SQLite in
//! a `BEGIN IMMEDIATE` transaction (the database's write lock), and every statement is
//! `CREATE ... IF NOT EXISTS` besides.

/// One schema version: statements run in order, then the version is recorded.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) statements: &'static [&'static str],
}

/// The table recording applied versions.
pub(crate) const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {migrations} (version BIGINT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)";

#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    statements: &[
        r#"CREATE TABLE IF NOT EXISTS {kv} (
            ns text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            data bytea NOT NULL,
            size bigint NOT NULL,
            modified bigint NOT NULL,
            PRIMARY KEY (ns, name))"#,
        r#"CREATE TABLE IF NOT EXISTS {locks} (
            ns text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            token text NOT NULL,
            expires timestamptz NOT NULL,
            PRIMARY KEY (ns, name))"#,
    ],
}];

#[cfg(feature = "mysql")]
pub(crate) const MYSQL: &[Migration] = &[Migration {
    version: 1,
    statements: &[
        "CREATE TABLE IF NOT EXISTS {kv} (
            ns VARBINARY(128) NOT NULL,
            name VARBINARY(1024) NOT NULL,
            data LONGBLOB NOT NULL,
            size BIGINT NOT NULL,
            modified BIGINT NOT NULL,
            PRIMARY KEY (ns, name)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS {locks} (
            ns VARBINARY(128) NOT NULL,
            name VARBINARY(1024) NOT NULL,
            token VARBINARY(64) NOT NULL,
            expires DATETIME(6) NOT NULL,
            PRIMARY KEY (ns, name)) ENGINE=InnoDB",
    ],
}];

#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    statements: &[
        "CREATE TABLE IF NOT EXISTS {kv} (
            ns TEXT NOT NULL,
            name TEXT NOT NULL,
            data BLOB NOT NULL,
            size INTEGER NOT NULL,
            modified INTEGER NOT NULL,
            PRIMARY KEY (ns, name))",
        "CREATE TABLE IF NOT EXISTS {locks} (
            ns TEXT NOT NULL,
            name TEXT NOT NULL,
            token TEXT NOT NULL,
            expires INTEGER NOT NULL,
            PRIMARY KEY (ns, name))",
    ],
}];

/// Validated table names, spliced into statement templates.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub(crate) kv: String,
    pub(crate) locks: String,
    pub(crate) migrations: String,
}

impl Tables {
    /// Fills `{kv}`, `{locks}` and `{migrations}` in `template`. Only identifiers checked by
    /// [`check_identifier`](crate::config::check_identifier) reach here; keys, values,
    /// names and tokens are always bound as parameters.
    pub(crate) fn render(&self, template: &str) -> sqlx::SqlStr {
        let text = template
            .replace("{kv}", &self.kv)
            .replace("{locks}", &self.locks)
            .replace("{migrations}", &self.migrations);
        sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(std::sync::Arc::<str>::from(text)))
    }
}

/// The highest version of `migrations`.
pub(crate) fn latest(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}
