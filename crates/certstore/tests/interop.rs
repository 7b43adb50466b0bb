//! Interoperability with each backend's own client, in both directions, as
//! `docs/storage-layout.md` describes the layout: `certstore import` writes a certificate
//! and the native client reads its values back byte for byte; the native client writes a
//! record (and edits it by hand) and `certstore ls`, `show` and `rm` read and remove it.
//!
//! PostgreSQL (`psql`), MariaDB (`mariadb`), SQLite (`sqlite3`), Redis (`redis-cli`), S3
//! (boto3) and Azure Blob (azure-storage-blob). Servers come from `CERTSTORE_TEST_*_URL`,
//! clients from `CERTSTORE_TEST_PSQL`, `_MYSQL_CLIENT`, `_SQLITE3`, `_REDIS_CLI`,
//! `_PYTHON_S3` and `_PYTHON_AZURE` (written by `integration-tests/services/start.sh`; the
//! command-line clients fall back to the `PATH`). A missing server or client skips the test, or fails it under
//! `CERTSTORE_REQUIRE_SERVICES=1`. Each test works in a namespace or prefix of its own.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

#[path = "interop/native.rs"]
mod native;
#[path = "interop/objects.rs"]
mod objects;
#[path = "interop/record.rs"]
mod record;
#[path = "interop/redis.rs"]
mod redis;
#[path = "interop/sql.rs"]
mod sql;
