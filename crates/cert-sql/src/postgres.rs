//! PostgreSQL: its [`Syntax`], connecting, and migrating under an advisory lock.

use cert_core::Result;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};

use crate::backend::SqlBackend;
use crate::config::{Dialect, SqlConfig};
use crate::dialect::{SqlDialect, Syntax};
use crate::error::from_sqlx;
use crate::{schema, statements};

fn err(e: sqlx::Error) -> cert_core::Error {
    from_sqlx(Dialect::Postgres, e)
}

pub(crate) async fn connect(url: &str, config: &SqlConfig) -> Result<PgPool> {
    let options: PgConnectOptions = url.parse().map_err(err)?;
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(err)
}

impl SqlDialect for Postgres {
    const DIALECT: Dialect = Dialect::Postgres;
    const SYNTAX: Syntax = Syntax {
        placeholder: "$",
        numbered: true,
        text_as_bytes: false,
        // The database's clock: lock expiry never depends on the clients' clocks.
        now: "now()",
        expiry_unit_micros: 1,
        expires_in: "{now} + {4}::bigint * interval '1 microsecond'",
        time_left: "CAST(EXTRACT(EPOCH FROM (expires - {now})) * 1000000 AS bigint)",
        now_millis: "(extract(epoch from now()) * 1000)::bigint",
        upsert: "ON CONFLICT (ns, name) DO UPDATE SET data = EXCLUDED.data, \
                 size = EXCLUDED.size, modified = EXCLUDED.modified",
        delete: statements::DELETE,
        acquire: "INSERT INTO {locks} AS l (ns, name, token, expires) \
                  VALUES ({1}, {2}, {3}, {expires_in}) \
                  ON CONFLICT (ns, name) DO UPDATE SET token = EXCLUDED.token, \
                  expires = EXCLUDED.expires WHERE l.expires <= {now} RETURNING token",
        acquire_returns_token: true,
        // `clock_timestamp()`, not `now()`: inside a transaction `now()` is the time the
        // transaction began, and the lease must be live when the row is locked. A
        // takeover updating the row at the same moment makes this wait, and the row is
        // then checked again as the takeover left it (no longer our token).
        fence: "SELECT 1 FROM {locks} WHERE ns = {1} AND name = {2} AND token = {3} \
                AND expires > clock_timestamp() FOR UPDATE",
        begin_fenced: None,
        migrations: schema::POSTGRES,
    };
    type Text = String;
    type Flag = bool;

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Creates or upgrades the tables in one transaction, serialized across processes by
    /// a transaction-scoped advisory lock keyed by the migrations table's name.
    async fn migrate(backend: &SqlBackend<Self>) -> Result<()> {
        let mut tx = backend.pool().begin().await.map_err(err)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(backend.migration_lock_name())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        backend.apply_migrations(&mut tx).await?;
        tx.commit().await.map_err(err)
    }
}
