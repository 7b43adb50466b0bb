//! Mapping `sqlx` errors into [`cert_core::Error`], keeping the source.

use std::time::Duration;

use cert_core::Error;

use crate::config::Dialect;

/// Converts a `sqlx` error: lost or refused connections, pool timeouts, I/O and TLS
/// failures, server shutdowns, deadlocks and lock timeouts become the retryable
/// [`Error::Unavailable`]; everything else is [`Error::Backend`].
pub(crate) fn from_sqlx(dialect: Dialect, err: sqlx::Error) -> Error {
    if is_transient(dialect, &err) {
        Error::unavailable(dialect.name(), err)
    } else {
        Error::backend(dialect.name(), err)
    }
}

fn is_transient(dialect: Dialect, err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => match dialect {
            Dialect::Postgres => db.code().is_some_and(|code| postgres_transient(&code)),
            Dialect::MySql => mysql_number(db.as_ref()).is_some_and(mysql_transient),
            Dialect::Sqlite => db
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(sqlite_transient),
        },
        _ => false,
    }
}

/// SQLSTATE classes and codes that mean "try again later".
fn postgres_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources
        || matches!(
            code,
            "40001" // serialization failure
                | "40P01" // deadlock detected
                | "55P03" // lock not available
                | "57014" // query cancelled (statement timeout)
                | "57P01" // admin shutdown
                | "57P02" // crash shutdown
                | "57P03" // cannot connect now
                | "57P05" // idle session timeout
        )
}

#[cfg(feature = "mysql")]
fn mysql_number(db: &(dyn sqlx::error::DatabaseError + 'static)) -> Option<u16> {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .map(sqlx::mysql::MySqlDatabaseError::number)
}

#[cfg(not(feature = "mysql"))]
fn mysql_number(_db: &(dyn sqlx::error::DatabaseError + 'static)) -> Option<u16> {
    None
}

/// MySQL and MariaDB error numbers that mean "try again later".
fn mysql_transient(number: u16) -> bool {
    matches!(
        number,
        1040 // too many connections
            | 1053 // server shutdown in progress
            | 1205 // lock wait timeout
            | 1213 // deadlock
            | 1317 // query interrupted
            | 1927 // connection killed (MariaDB)
            | 2006 // server has gone away
            | 2013 // lost connection during query
            | 3024 // maximum statement execution time exceeded
    )
}

/// SQLite primary result codes that mean "try again later": BUSY, LOCKED, IOERR, FULL
/// is not one of them (it needs an operator), CANTOPEN is.
fn sqlite_transient(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 10 | 14)
}

/// The error an operation that ran past its deadline reports.
pub(crate) fn timed_out(dialect: Dialect, limit: Duration) -> Error {
    Error::unavailable(
        dialect.name(),
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("operation did not finish within {limit:?}"),
        ),
    )
}

/// A value read back from the database that cannot be what was written.
pub(crate) fn corrupt(key: &str, what: &str) -> Error {
    Error::corrupt(
        key,
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_retryable() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let err = from_sqlx(Dialect::Postgres, io);
        assert!(err.is_retryable());
        assert!(matches!(
            err,
            Error::Unavailable {
                backend: "postgres",
                ..
            }
        ));
        assert!(std::error::Error::source(&err).is_some());
        assert!(from_sqlx(Dialect::MySql, sqlx::Error::PoolTimedOut).is_retryable());
        let other = from_sqlx(Dialect::Sqlite, sqlx::Error::RowNotFound);
        assert!(matches!(
            other,
            Error::Backend {
                backend: "sqlite",
                ..
            }
        ));
        assert!(timed_out(Dialect::MySql, Duration::from_secs(1)).is_retryable());
    }

    #[test]
    fn transient_codes() {
        assert!(postgres_transient("08006"));
        assert!(postgres_transient("57P01"));
        assert!(!postgres_transient("23505"));
        assert!(mysql_transient(1213));
        assert!(!mysql_transient(1062));
        assert!(sqlite_transient(5));
        assert!(sqlite_transient(5 | (1 << 8)));
        assert!(!sqlite_transient(19));
    }
}
