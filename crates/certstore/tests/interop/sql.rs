//! PostgreSQL through `psql`, MariaDB through `mariadb` and SQLite through `sqlite3`: rows
//! of the values table (`certstore_kv`) written and read by hand, bytes carried as hex.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use integration_tests::{service_url, unique_name};

use super::native::{Native, client, from_hex, run_client, to_hex};
use super::record::{certstore_writes_native_reads, cleared, native_writes_certstore_reads, now};

/// How one SQL client is driven: the command, the SQL of a row, how it prints columns.
trait Dialect {
    /// The client, ready for a script on its standard input.
    fn command(&self) -> Command;
    /// A string literal of `text` for the `ns` and `name` columns.
    fn text(&self, text: &str) -> String;
    /// A literal of `bytes` for the `data` column.
    fn bytes(&self, bytes: &[u8]) -> String;
    /// The expression giving the hex of the text column `column` (`name`).
    fn text_hex(&self, column: &str) -> String;
    /// The expression giving the hex of the bytes column `column` (`data`).
    fn bytes_hex(&self, column: &str) -> String;
    /// The clause that makes an insert replace the row of the same key.
    fn upsert(&self) -> &'static str;
    /// What separates the columns the client prints.
    fn separator(&self) -> char;
}

/// A namespace of a SQL database, its certstore URL and its client.
struct Sql<D> {
    dialect: D,
    url: String,
    ns: String,
}

impl<D: Dialect> Sql<D> {
    fn script(&self, sql: &str) -> String {
        run_client(&mut self.dialect.command(), sql)
    }
}

impl<D: Dialect> Native for Sql<D> {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn put(&self, values: &[(String, Vec<u8>)]) {
        let d = &self.dialect;
        let micros = now() * 1_000_000;
        let sql: String = values
            .iter()
            .map(|(key, value)| {
                format!(
                    "INSERT INTO certstore_kv (ns, name, data, size, modified) \
                     VALUES ({}, {}, {}, {}, {micros}) {};\n",
                    d.text(&self.ns),
                    d.text(key),
                    d.bytes(value),
                    value.len(),
                    d.upsert()
                )
            })
            .collect();
        self.script(&sql);
    }

    /// Also checks what the layout says of the other columns: `size` is the length of
    /// `data` and `modified` microseconds since the Unix epoch.
    fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        let d = &self.dialect;
        let out = self.script(&format!(
            "SELECT {}, size, modified, {} FROM certstore_kv WHERE ns = {} ORDER BY name;\n",
            d.text_hex("name"),
            d.bytes_hex("data"),
            d.text(&self.ns)
        ));
        let recent = (now() - 3600) * 1_000_000..(now() + 60) * 1_000_000;
        let mut values = BTreeMap::new();
        for line in out.lines().filter(|line| !line.is_empty()) {
            let columns: Vec<&str> = line.split(d.separator()).collect();
            let [name, size, modified, data] = columns[..] else {
                panic!("four columns: {line:?}");
            };
            let name = String::from_utf8(from_hex(name)).unwrap();
            let data = from_hex(data);
            assert_eq!(size.parse::<usize>().unwrap(), data.len(), "{name}: size");
            let modified: i64 = modified.parse().unwrap();
            assert!(recent.contains(&modified), "{name}: modified {modified}");
            values.insert(name, data);
        }
        values
    }

    fn clear(&self) {
        let ns = self.dialect.text(&self.ns);
        self.script(&format!(
            "DELETE FROM certstore_kv WHERE ns = {ns};\nDELETE FROM certstore_locks WHERE ns = {ns};\n"
        ));
    }
}

/// A single-quoted SQL string (standard SQL: a quote doubled).
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A server URL with certstore's `namespace` parameter added.
fn with_namespace(url: &str, ns: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}namespace={ns}")
}

struct Psql {
    psql: PathBuf,
    /// The server's URL without certstore's parameters.
    conninfo: String,
}

impl Dialect for Psql {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.psql);
        command.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "|",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
        ]);
        command.arg(&self.conninfo);
        command
    }
    fn text(&self, text: &str) -> String {
        quoted(text)
    }
    fn bytes(&self, bytes: &[u8]) -> String {
        format!("decode('{}', 'hex')", to_hex(bytes))
    }
    fn text_hex(&self, column: &str) -> String {
        format!("encode(convert_to({column}, 'UTF8'), 'hex')")
    }
    fn bytes_hex(&self, column: &str) -> String {
        format!("encode({column}, 'hex')")
    }
    fn upsert(&self) -> &'static str {
        "ON CONFLICT (ns, name) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, \
         modified = EXCLUDED.modified"
    }
    fn separator(&self) -> char {
        '|'
    }
}

struct Mariadb {
    client: PathBuf,
    server: url::Url,
}

impl Dialect for Mariadb {
    fn command(&self) -> Command {
        let s = &self.server;
        let mut command = Command::new(&self.client);
        command
            .arg(format!("--host={}", s.host_str().unwrap()))
            .arg(format!("--port={}", s.port().unwrap_or(3306)))
            .arg(format!("--user={}", s.username()))
            .arg(format!("--database={}", s.path().trim_start_matches('/')))
            .args(["--protocol=TCP", "--batch", "--skip-column-names"])
            .env("MYSQL_PWD", s.password().unwrap_or_default());
        command
    }
    fn text(&self, text: &str) -> String {
        self.bytes(text.as_bytes())
    }
    fn bytes(&self, bytes: &[u8]) -> String {
        format!("X'{}'", to_hex(bytes))
    }
    fn text_hex(&self, column: &str) -> String {
        self.bytes_hex(column)
    }
    fn bytes_hex(&self, column: &str) -> String {
        format!("HEX({column})")
    }
    fn upsert(&self) -> &'static str {
        "ON DUPLICATE KEY UPDATE data = VALUES(data), size = VALUES(size), \
         modified = VALUES(modified)"
    }
    fn separator(&self) -> char {
        '\t'
    }
}

struct Sqlite3 {
    sqlite3: PathBuf,
    db: PathBuf,
    /// Holds the database file.
    _dir: tempfile::TempDir,
}

impl Dialect for Sqlite3 {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.sqlite3);
        command.args(["-bail", "-batch", "-cmd", ".timeout 10000"]);
        command.arg(&self.db);
        command
    }
    /// A text literal: in a `TEXT` column a blob literal would stay a blob, which no
    /// query by key matches.
    fn text(&self, text: &str) -> String {
        quoted(text)
    }
    fn bytes(&self, bytes: &[u8]) -> String {
        format!("X'{}'", to_hex(bytes))
    }
    fn text_hex(&self, column: &str) -> String {
        self.bytes_hex(column)
    }
    fn bytes_hex(&self, column: &str) -> String {
        format!("hex({column})")
    }
    fn upsert(&self) -> &'static str {
        "ON CONFLICT (ns, name) DO UPDATE SET data = excluded.data, size = excluded.size, \
         modified = excluded.modified"
    }
    fn separator(&self) -> char {
        '|'
    }
}

fn postgres() -> Option<Sql<Psql>> {
    let server = service_url("CERTSTORE_TEST_POSTGRES_URL")?;
    let psql = client("CERTSTORE_TEST_PSQL", &["psql"])?;
    let ns = unique_name("interop");
    Some(Sql {
        url: with_namespace(&server, &ns),
        dialect: Psql {
            psql,
            conninfo: server.split('?').next().unwrap_or_default().to_owned(),
        },
        ns,
    })
}

fn mariadb() -> Option<Sql<Mariadb>> {
    let server = service_url("CERTSTORE_TEST_MYSQL_URL")?;
    let mariadb = client("CERTSTORE_TEST_MYSQL_CLIENT", &["mariadb", "mysql"])?;
    let ns = unique_name("interop");
    Some(Sql {
        url: with_namespace(&server, &ns),
        dialect: Mariadb {
            client: mariadb,
            server: url::Url::parse(&server).unwrap(),
        },
        ns,
    })
}

/// A new database file, used with the default (empty) namespace.
fn sqlite() -> Option<Sql<Sqlite3>> {
    let sqlite3 = client("CERTSTORE_TEST_SQLITE3", &["sqlite3"])?;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("interop.db");
    Some(Sql {
        url: format!("sqlite://{}", db.display()),
        dialect: Sqlite3 {
            sqlite3,
            db,
            _dir: dir,
        },
        ns: String::new(),
    })
}

#[test]
fn psql_reads_what_certstore_imported() {
    if let Some(sql) = postgres() {
        certstore_writes_native_reads(&sql);
        cleared(&sql);
    }
}

#[test]
fn certstore_reads_rows_written_with_psql() {
    if let Some(sql) = postgres() {
        native_writes_certstore_reads(&sql);
        cleared(&sql);
    }
}

#[test]
fn mariadb_client_reads_what_certstore_imported() {
    if let Some(sql) = mariadb() {
        certstore_writes_native_reads(&sql);
        cleared(&sql);
    }
}

#[test]
fn certstore_reads_rows_written_with_the_mariadb_client() {
    if let Some(sql) = mariadb() {
        native_writes_certstore_reads(&sql);
        cleared(&sql);
    }
}

#[test]
fn sqlite3_reads_what_certstore_imported() {
    if let Some(sql) = sqlite() {
        certstore_writes_native_reads(&sql);
    }
}

#[test]
fn certstore_reads_rows_written_with_sqlite3() {
    if let Some(sql) = sqlite() {
        native_writes_certstore_reads(&sql);
    }
}
