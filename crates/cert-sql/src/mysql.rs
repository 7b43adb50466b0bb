//! MySQL and MariaDB: their [`Syntax`], connecting, and migrating under a named server
//! lock.
//!
//! Keys, names and tokens live in `VARBINARY` columns and are bound as bytes, so every
//! comparison and `ORDER BY` is bytewise whatever the connection's character set.

use cert_core::Result;
use sqlx::MySql;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlQueryResult};

use crate::backend::SqlBackend;
use crate::config::{Dialect, SqlConfig};
use crate::dialect::{SqlDialect, Syntax};
use crate::error::from_sqlx;
use crate::{schema, statements};

fn err(e: sqlx::Error) -> cert_core::Error {
    from_sqlx(Dialect::MySql, e)
}

/// How long a starting process waits for another one's migration, in seconds.
const MIGRATION_LOCK_WAIT_SECS: i64 = 60;

pub(crate) async fn connect(url: &str, config: &SqlConfig) -> Result<MySqlPool> {
    let options: MySqlConnectOptions = url.parse().map_err(err)?;
    MySqlPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(err)
}

impl SqlDialect for MySql {
    const DIALECT: Dialect = Dialect::MySql;
    const SYNTAX: Syntax = Syntax {
        placeholder: "?",
        numbered: false,
        text_as_bytes: true,
        // The database's clock, in UTC so the session time zone never matters.
        now: "UTC_TIMESTAMP(6)",
        expiry_unit_micros: 1,
        expires_in: "{now} + INTERVAL {4} MICROSECOND",
        time_left: "TIMESTAMPDIFF(MICROSECOND, {now}, expires)",
        now_millis: "CAST(UNIX_TIMESTAMP() * 1000 AS SIGNED)",
        upsert: "ON DUPLICATE KEY UPDATE data = VALUES(data), size = VALUES(size), \
                 modified = VALUES(modified)",
        delete: statements::DELETE,
        // Assignments run left to right: `token` is decided on the old `expires`, then
        // `expires` itself. A live lease is left exactly as it was.
        acquire: "INSERT INTO {locks} (ns, name, token, expires) \
                  VALUES ({1}, {2}, {3}, {expires_in}) \
                  ON DUPLICATE KEY UPDATE \
                  token = IF(expires <= {now}, VALUES(token), token), \
                  expires = IF(expires <= {now}, VALUES(expires), expires)",
        acquire_returns_token: false,
        // A locking read sees the latest committed row, not the transaction's
        // snapshot, and holds it until the commit; a takeover updating the row waits.
        fence: "SELECT 1 FROM {locks} WHERE ns = {1} AND name = {2} AND token = {3} \
                AND expires > {now} FOR UPDATE",
        begin_fenced: None,
        migrations: schema::MYSQL,
    };
    type Text = Vec<u8>;
    type Flag = i64;

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Creates or upgrades the tables while holding a named server lock (`GET_LOCK`,
    /// keyed by database and migrations table) on one connection. DDL commits on its own
    /// in MySQL, so the lock, not a transaction, keeps concurrent starters apart.
    async fn migrate(backend: &SqlBackend<Self>) -> Result<()> {
        let mut conn = backend.pool().acquire().await.map_err(err)?;
        let lock_name = backend.migration_lock_name();
        let got: Option<i64> =
            sqlx::query_scalar("SELECT GET_LOCK(MD5(CONCAT(IFNULL(DATABASE(), ''), '.', ?)), ?)")
                .bind(&lock_name)
                .bind(MIGRATION_LOCK_WAIT_SECS)
                .fetch_one(&mut *conn)
                .await
                .map_err(err)?;
        if got != Some(1) {
            return Err(cert_core::Error::unavailable(
                "mysql",
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out waiting for another process's schema migration",
                ),
            ));
        }
        let result = backend.apply_migrations(&mut conn).await;
        let released =
            sqlx::query("SELECT RELEASE_LOCK(MD5(CONCAT(IFNULL(DATABASE(), ''), '.', ?)))")
                .bind(&lock_name)
                .execute(&mut *conn)
                .await;
        if let Err(e) = released {
            // The server drops the lock with the connection; make sure it goes.
            conn.close_on_drop();
            tracing::warn!(error = %e, "releasing the migration lock failed");
        }
        result
    }
}
