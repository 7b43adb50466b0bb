//! What differs between the SQL dialects: the [`SqlDialect`] trait each sqlx driver
//! implements, and the [`Syntax`] its statements are written in.

use std::future::Future;

use cert_core::Result;
use sqlx::{Database, Decode, Type};

use crate::backend::SqlBackend;
use crate::config::Dialect;
use crate::schema::Migration;

/// How one dialect writes what the shared statement templates (see
/// [`Statements`](crate::statements::Statements)) leave open.
///
/// Templates name their parameters `{1}`, `{2}`, ... and the tables `{kv}`, `{locks}`
/// and `{migrations}`; the fragments below may use `{now}` (replaced by
/// [`now`](Self::now)) and parameters too.
pub(crate) struct Syntax {
    /// A parameter's placeholder: `$` or `?`, followed by the parameter's number when
    /// [`numbered`](Self::numbered).
    pub(crate) placeholder: &'static str,
    /// Whether placeholders carry the parameter's number. Unnumbered placeholders are
    /// bound in the order they appear, so a parameter used twice is bound twice.
    pub(crate) numbered: bool,
    /// Whether namespaces, keys, names and tokens are bound as bytes rather than text.
    pub(crate) text_as_bytes: bool,
    /// The current time by the database's clock, in the type of the lock table's
    /// `expires` column.
    pub(crate) now: &'static str,
    /// Microseconds in one unit of the time to live bound to `{4}` and of
    /// [`time_left`](Self::time_left): 1, or 1000 where lock expiry counts milliseconds.
    pub(crate) expiry_unit_micros: i64,
    /// `{now}` plus the time to live bound to `{4}`: a lock's new expiry.
    pub(crate) expires_in: &'static str,
    /// The time a lock row has left by the database's clock, negative once expired.
    pub(crate) time_left: &'static str,
    /// Milliseconds since the Unix epoch by the database's clock, recorded with each
    /// applied migration.
    pub(crate) now_millis: &'static str,
    /// The clause that turns the value insert into an overwrite when the key exists.
    pub(crate) upsert: &'static str,
    /// Deletes the key `{2}` and the keys in `[{3}, {4})` of namespace `{1}`.
    pub(crate) delete: &'static str,
    /// Inserts the lock row (`{1}` namespace, `{2}` name, `{3}` token, expiring in `{4}`)
    /// or takes it over only when the existing row has expired, in one statement.
    pub(crate) acquire: &'static str,
    /// Whether [`acquire`](Self::acquire) returns the row's token (`RETURNING`), or the
    /// token must be read back by a second statement.
    pub(crate) acquire_returns_token: bool,
    /// A fenced write's check: one row when the lease's row (`{1}` namespace, `{2}` name)
    /// still holds token `{3}` and a live expiry, and the row can no longer change until
    /// the transaction ends.
    pub(crate) fence: &'static str,
    /// The statement that begins a fenced write's transaction, when the driver's plain
    /// `BEGIN` is not what [`fence`](Self::fence) needs.
    pub(crate) begin_fenced: Option<&'static str>,
    /// The schema, as versioned migrations.
    pub(crate) migrations: &'static [Migration],
}

/// An sqlx database driver this crate speaks, with what its dialect does differently.
///
/// Everything else (every storage and lock operation, fenced writes, the migration
/// steps) is written once, in [`SqlBackend`].
pub(crate) trait SqlDialect: Database {
    /// Which dialect this is.
    const DIALECT: Dialect;
    /// How its statements are written and its parameters bound.
    const SYNTAX: Syntax;
    /// A namespace, key, name or token as the database returns it.
    type Text: for<'r> Decode<'r, Self> + Type<Self> + Into<Vec<u8>> + Send + Unpin;
    /// A truth value as the database returns it.
    type Flag: for<'r> Decode<'r, Self> + Type<Self> + Into<i64> + Send + Unpin;

    /// The number of rows a statement changed (sqlx has no common trait for it).
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Creates or upgrades the tables with
    /// [`apply_migrations`](SqlBackend::apply_migrations), keeping other processes
    /// that do the same at once out until it is done.
    fn migrate(backend: &SqlBackend<Self>) -> impl Future<Output = Result<()>> + Send;
}
