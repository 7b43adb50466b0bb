//! The statements each dialect renders, compared with their SQL written out in full.

use super::*;
use crate::dialect::SqlDialect;

/// Renders every statement for `DB` and compares each with `expected`: its SQL (with
/// `{now}` and the table names still to fill in) and the parameters it binds, in order.
fn check<DB: SqlDialect>(expected: &[(&str, &str, &[usize])]) {
    let syntax = &DB::SYNTAX;
    let tables = Tables {
        kv: "certstore_kv".into(),
        locks: "certstore_locks".into(),
        migrations: "certstore_kv_migrations".into(),
    };
    let q = Statements::new(syntax, &tables);
    let rendered = [
        ("store", Some(&q.store)),
        ("load", Some(&q.load)),
        ("delete", Some(&q.delete)),
        ("exists", Some(&q.exists)),
        ("stat_key", Some(&q.stat_key)),
        ("stat_prefix", Some(&q.stat_prefix)),
        ("list_range", Some(&q.list_range)),
        ("list_open", Some(&q.list_open)),
        ("acquire", Some(&q.acquire)),
        ("read_token", q.read_token.as_ref()),
        ("refresh", Some(&q.refresh)),
        ("release", Some(&q.release)),
        ("clean_locks", Some(&q.clean_locks)),
        ("fence", Some(&q.fence)),
        ("list_locks", Some(&q.list_locks)),
        ("force_release", Some(&q.force_release)),
        ("migrations_table", Some(&q.migrations_table)),
        ("schema_version", Some(&q.schema_version)),
        ("record_migration", Some(&q.record_migration)),
    ];
    let rendered: Vec<_> = rendered
        .into_iter()
        .filter_map(|(name, statement)| Some((name, statement?)))
        .collect();
    assert_eq!(rendered.len(), expected.len());
    for ((name, statement), (want_name, sql, binds)) in rendered.into_iter().zip(expected) {
        assert_eq!(name, *want_name);
        let sql = tables.render(&sql.replace("{now}", syntax.now));
        assert_eq!(statement.sql().as_str(), sql.as_str(), "{name}");
        assert_eq!(statement.binds(), *binds, "{name}");
    }
}

#[cfg(feature = "postgres")]
#[test]
fn postgres() {
    check::<sqlx::Postgres>(&[
        (
            "store",
            "INSERT INTO {kv} (ns, name, data, size, modified) VALUES ($1, $2, $3, $4, $5) ON \
             CONFLICT (ns, name) DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size, \
             modified = EXCLUDED.modified",
            &[0, 1, 2, 3, 4],
        ),
        (
            "load",
            "SELECT data FROM {kv} WHERE ns = $1 AND name = $2",
            &[0, 1],
        ),
        (
            "delete",
            "DELETE FROM {kv} WHERE ns = $1 AND (name = $2 OR (name >= $3 AND name < $4))",
            &[0, 1, 2, 3],
        ),
        (
            "exists",
            "SELECT EXISTS (SELECT 1 FROM {kv} WHERE ns = $1 AND name = $2) OR EXISTS (SELECT \
             1 FROM {kv} WHERE ns = $1 AND name >= $3 AND name < $4)",
            &[0, 1, 2, 3],
        ),
        (
            "stat_key",
            "SELECT size, modified FROM {kv} WHERE ns = $1 AND name = $2",
            &[0, 1],
        ),
        (
            "stat_prefix",
            "SELECT MAX(modified) FROM {kv} WHERE ns = $1 AND name >= $2 AND name < $3",
            &[0, 1, 2],
        ),
        (
            "list_range",
            "SELECT name FROM {kv} WHERE ns = $1 AND name >= $2 AND name < $3 ORDER BY name \
             LIMIT $4",
            &[0, 1, 2, 3],
        ),
        (
            "list_open",
            "SELECT name FROM {kv} WHERE ns = $1 AND name >= $2 ORDER BY name LIMIT $3",
            &[0, 1, 2],
        ),
        (
            "acquire",
            "INSERT INTO {locks} AS l (ns, name, token, expires) VALUES ($1, $2, $3, {now} + \
             $4::bigint * interval '1 microsecond') ON CONFLICT (ns, name) DO UPDATE SET token \
             = EXCLUDED.token, expires = EXCLUDED.expires WHERE l.expires <= {now} RETURNING \
             token",
            &[0, 1, 2, 3],
        ),
        (
            "refresh",
            "UPDATE {locks} SET expires = {now} + $4::bigint * interval '1 microsecond' WHERE \
             ns = $1 AND name = $2 AND token = $3 AND expires > {now}",
            &[0, 1, 2, 3],
        ),
        (
            "release",
            "DELETE FROM {locks} WHERE ns = $1 AND name = $2 AND token = $3 AND expires > \
             {now}",
            &[0, 1, 2],
        ),
        (
            "clean_locks",
            "DELETE FROM {locks} WHERE ns = $1 AND expires <= {now}",
            &[0],
        ),
        (
            "fence",
            "SELECT 1 FROM {locks} WHERE ns = $1 AND name = $2 AND token = $3 AND expires > \
             clock_timestamp() FOR UPDATE",
            &[0, 1, 2],
        ),
        (
            "list_locks",
            "SELECT name, token, CAST(EXTRACT(EPOCH FROM (expires - {now})) * 1000000 AS \
             bigint) FROM {locks} WHERE ns = $1 ORDER BY name",
            &[0],
        ),
        (
            "force_release",
            "DELETE FROM {locks} WHERE ns = $1 AND name = $2",
            &[0, 1],
        ),
        (
            "migrations_table",
            "CREATE TABLE IF NOT EXISTS {migrations} (version BIGINT NOT NULL PRIMARY KEY, \
             applied_at BIGINT NOT NULL)",
            &[],
        ),
        (
            "schema_version",
            "SELECT MAX(version) FROM {migrations}",
            &[],
        ),
        (
            "record_migration",
            "INSERT INTO {migrations} (version, applied_at) VALUES ($1, (extract(epoch from \
             {now}) * 1000)::bigint)",
            &[0],
        ),
    ]);
}

#[cfg(feature = "mysql")]
#[test]
fn mysql() {
    check::<sqlx::MySql>(&[
        (
            "store",
            "INSERT INTO {kv} (ns, name, data, size, modified) VALUES (?, ?, ?, ?, ?) ON \
             DUPLICATE KEY UPDATE data = VALUES(data), size = VALUES(size), modified = \
             VALUES(modified)",
            &[0, 1, 2, 3, 4],
        ),
        (
            "load",
            "SELECT data FROM {kv} WHERE ns = ? AND name = ?",
            &[0, 1],
        ),
        (
            "delete",
            "DELETE FROM {kv} WHERE ns = ? AND (name = ? OR (name >= ? AND name < ?))",
            &[0, 1, 2, 3],
        ),
        (
            "exists",
            "SELECT EXISTS (SELECT 1 FROM {kv} WHERE ns = ? AND name = ?) OR EXISTS (SELECT 1 \
             FROM {kv} WHERE ns = ? AND name >= ? AND name < ?)",
            &[0, 1, 0, 2, 3],
        ),
        (
            "stat_key",
            "SELECT size, modified FROM {kv} WHERE ns = ? AND name = ?",
            &[0, 1],
        ),
        (
            "stat_prefix",
            "SELECT MAX(modified) FROM {kv} WHERE ns = ? AND name >= ? AND name < ?",
            &[0, 1, 2],
        ),
        (
            "list_range",
            "SELECT name FROM {kv} WHERE ns = ? AND name >= ? AND name < ? ORDER BY name LIMIT \
             ?",
            &[0, 1, 2, 3],
        ),
        (
            "list_open",
            "SELECT name FROM {kv} WHERE ns = ? AND name >= ? ORDER BY name LIMIT ?",
            &[0, 1, 2],
        ),
        (
            "acquire",
            "INSERT INTO {locks} (ns, name, token, expires) VALUES (?, ?, ?, {now} + INTERVAL \
             ? MICROSECOND) ON DUPLICATE KEY UPDATE token = IF(expires <= {now}, \
             VALUES(token), token), expires = IF(expires <= {now}, VALUES(expires), expires)",
            &[0, 1, 2, 3],
        ),
        (
            "read_token",
            "SELECT token FROM {locks} WHERE ns = ? AND name = ?",
            &[0, 1],
        ),
        (
            "refresh",
            "UPDATE {locks} SET expires = {now} + INTERVAL ? MICROSECOND WHERE ns = ? AND name \
             = ? AND token = ? AND expires > {now}",
            &[3, 0, 1, 2],
        ),
        (
            "release",
            "DELETE FROM {locks} WHERE ns = ? AND name = ? AND token = ? AND expires > {now}",
            &[0, 1, 2],
        ),
        (
            "clean_locks",
            "DELETE FROM {locks} WHERE ns = ? AND expires <= {now}",
            &[0],
        ),
        (
            "fence",
            "SELECT 1 FROM {locks} WHERE ns = ? AND name = ? AND token = ? AND expires > {now} \
             FOR UPDATE",
            &[0, 1, 2],
        ),
        (
            "list_locks",
            "SELECT name, token, TIMESTAMPDIFF(MICROSECOND, {now}, expires) FROM {locks} WHERE \
             ns = ? ORDER BY name",
            &[0],
        ),
        (
            "force_release",
            "DELETE FROM {locks} WHERE ns = ? AND name = ?",
            &[0, 1],
        ),
        (
            "migrations_table",
            "CREATE TABLE IF NOT EXISTS {migrations} (version BIGINT NOT NULL PRIMARY KEY, \
             applied_at BIGINT NOT NULL)",
            &[],
        ),
        (
            "schema_version",
            "SELECT MAX(version) FROM {migrations}",
            &[],
        ),
        (
            "record_migration",
            "INSERT INTO {migrations} (version, applied_at) VALUES (?, CAST(UNIX_TIMESTAMP() * \
             1000 AS SIGNED))",
            &[0],
        ),
    ]);
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite() {
    check::<sqlx::Sqlite>(&[
        (
            "store",
            "INSERT INTO {kv} (ns, name, data, size, modified) VALUES (?1, ?2, ?3, ?4, ?5) ON \
             CONFLICT (ns, name) DO UPDATE SET data = excluded.data, size = excluded.size, \
             modified = excluded.modified",
            &[0, 1, 2, 3, 4],
        ),
        (
            "load",
            "SELECT data FROM {kv} WHERE ns = ?1 AND name = ?2",
            &[0, 1],
        ),
        (
            "delete",
            "DELETE FROM {kv} WHERE rowid IN (SELECT rowid FROM {kv} WHERE ns = ?1 AND name = \
             ?2 UNION ALL SELECT rowid FROM {kv} WHERE ns = ?1 AND name >= ?3 AND name < ?4)",
            &[0, 1, 2, 3],
        ),
        (
            "exists",
            "SELECT EXISTS (SELECT 1 FROM {kv} WHERE ns = ?1 AND name = ?2) OR EXISTS (SELECT \
             1 FROM {kv} WHERE ns = ?1 AND name >= ?3 AND name < ?4)",
            &[0, 1, 2, 3],
        ),
        (
            "stat_key",
            "SELECT size, modified FROM {kv} WHERE ns = ?1 AND name = ?2",
            &[0, 1],
        ),
        (
            "stat_prefix",
            "SELECT MAX(modified) FROM {kv} WHERE ns = ?1 AND name >= ?2 AND name < ?3",
            &[0, 1, 2],
        ),
        (
            "list_range",
            "SELECT name FROM {kv} WHERE ns = ?1 AND name >= ?2 AND name < ?3 ORDER BY name \
             LIMIT ?4",
            &[0, 1, 2, 3],
        ),
        (
            "list_open",
            "SELECT name FROM {kv} WHERE ns = ?1 AND name >= ?2 ORDER BY name LIMIT ?3",
            &[0, 1, 2],
        ),
        (
            "acquire",
            "INSERT INTO {locks} (ns, name, token, expires) VALUES (?1, ?2, ?3, {now} + ?4) ON \
             CONFLICT (ns, name) DO UPDATE SET token = excluded.token, expires = \
             excluded.expires WHERE {locks}.expires <= {now} RETURNING token",
            &[0, 1, 2, 3],
        ),
        (
            "refresh",
            "UPDATE {locks} SET expires = {now} + ?4 WHERE ns = ?1 AND name = ?2 AND token = \
             ?3 AND expires > {now}",
            &[0, 1, 2, 3],
        ),
        (
            "release",
            "DELETE FROM {locks} WHERE ns = ?1 AND name = ?2 AND token = ?3 AND expires > \
             {now}",
            &[0, 1, 2],
        ),
        (
            "clean_locks",
            "DELETE FROM {locks} WHERE ns = ?1 AND expires <= {now}",
            &[0],
        ),
        (
            "fence",
            "SELECT 1 FROM {locks} WHERE ns = ?1 AND name = ?2 AND token = ?3 AND expires > \
             {now}",
            &[0, 1, 2],
        ),
        (
            "list_locks",
            "SELECT name, token, expires - {now} FROM {locks} WHERE ns = ?1 ORDER BY name",
            &[0],
        ),
        (
            "force_release",
            "DELETE FROM {locks} WHERE ns = ?1 AND name = ?2",
            &[0, 1],
        ),
        (
            "migrations_table",
            "CREATE TABLE IF NOT EXISTS {migrations} (version BIGINT NOT NULL PRIMARY KEY, \
             applied_at BIGINT NOT NULL)",
            &[],
        ),
        (
            "schema_version",
            "SELECT MAX(version) FROM {migrations}",
            &[],
        ),
        (
            "record_migration",
            "INSERT INTO {migrations} (version, applied_at) VALUES (?1, {now})",
            &[0],
        ),
    ]);
}

#[test]
fn placeholders_keep_other_braces_and_number_from_one() {
    let mut syntax = Syntax {
        placeholder: "?",
        numbered: false,
        ..test_syntax()
    };
    let (sql, order) = placeholders("{kv} {2} {0} {x {1}", &syntax);
    assert_eq!(sql, "{kv} ? {0} {x ?");
    assert_eq!(order, [1, 0]);
    syntax.placeholder = "$";
    syntax.numbered = true;
    assert_eq!(placeholders("{12}", &syntax).0, "$12");
}

fn test_syntax() -> Syntax {
    Syntax {
        placeholder: "",
        numbered: false,
        text_as_bytes: false,
        now: "",
        expiry_unit_micros: 1,
        expires_in: "",
        time_left: "",
        now_millis: "",
        upsert: "",
        delete: "",
        acquire: "",
        acquire_returns_token: true,
        fence: "",
        begin_fenced: None,
        migrations: &[],
    }
}
