//! [`Statements`]: every statement the backend runs, written once as a template and
//! rendered in a dialect's [`Syntax`] when a storage is built, and the [`Param`]s bound
//! to them.

use sqlx::SqlStr;

use crate::dialect::Syntax;
use crate::schema::{self, Tables};

/// The [`Syntax::delete`] of the dialects that need nothing better than `OR`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const DELETE: &str =
    "DELETE FROM {kv} WHERE ns = {1} AND (name = {2} OR (name >= {3} AND name < {4}))";

/// A value bound to a statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    /// A namespace, key, name or token (bound as bytes where
    /// [`Syntax::text_as_bytes`]).
    Text(&'a str),
    /// A stored value.
    Bytes(&'a [u8]),
    /// A number.
    Int(i64),
}

/// A rendered statement and the order its parameters are bound in.
pub(crate) struct Statement {
    sql: SqlStr,
    /// For each value to bind, in order, its index among the parameters of the call.
    binds: Box<[usize]>,
}

impl Statement {
    /// The SQL text.
    pub(crate) fn sql(&self) -> SqlStr {
        self.sql.clone()
    }

    /// For each value to bind, in order, its index among the parameters of the call.
    pub(crate) fn binds(&self) -> &[usize] {
        &self.binds
    }
}

/// Every statement of one dialect, for one set of tables.
pub(crate) struct Statements {
    pub(crate) store: Statement,
    pub(crate) load: Statement,
    pub(crate) delete: Statement,
    pub(crate) exists: Statement,
    pub(crate) stat_key: Statement,
    pub(crate) stat_prefix: Statement,
    pub(crate) list_range: Statement,
    pub(crate) list_open: Statement,
    pub(crate) acquire: Statement,
    /// Present when [`Syntax::acquire_returns_token`] is not.
    pub(crate) read_token: Option<Statement>,
    pub(crate) refresh: Statement,
    pub(crate) release: Statement,
    pub(crate) clean_locks: Statement,
    pub(crate) fence: Statement,
    pub(crate) list_locks: Statement,
    pub(crate) force_release: Statement,
    pub(crate) migrations_table: Statement,
    pub(crate) schema_version: Statement,
    pub(crate) record_migration: Statement,
}

impl Statements {
    pub(crate) fn new(syntax: &Syntax, tables: &Tables) -> Self {
        let r = |template: &str| render(syntax, tables, template);
        Statements {
            store: r("INSERT INTO {kv} (ns, name, data, size, modified) \
                 VALUES ({1}, {2}, {3}, {4}, {5}) {upsert}"),
            load: r("SELECT data FROM {kv} WHERE ns = {1} AND name = {2}"),
            delete: r(syntax.delete),
            exists: r(
                "SELECT EXISTS (SELECT 1 FROM {kv} WHERE ns = {1} AND name = {2}) \
                 OR EXISTS (SELECT 1 FROM {kv} WHERE ns = {1} AND name >= {3} AND name < {4})",
            ),
            stat_key: r("SELECT size, modified FROM {kv} WHERE ns = {1} AND name = {2}"),
            stat_prefix: r(
                "SELECT MAX(modified) FROM {kv} WHERE ns = {1} AND name >= {2} AND name < {3}",
            ),
            list_range: r(
                "SELECT name FROM {kv} WHERE ns = {1} AND name >= {2} AND name < {3} \
                 ORDER BY name LIMIT {4}",
            ),
            list_open: r(
                "SELECT name FROM {kv} WHERE ns = {1} AND name >= {2} ORDER BY name LIMIT {3}",
            ),
            acquire: r(syntax.acquire),
            read_token: (!syntax.acquire_returns_token)
                .then(|| r("SELECT token FROM {locks} WHERE ns = {1} AND name = {2}")),
            refresh: r("UPDATE {locks} SET expires = {expires_in} \
                 WHERE ns = {1} AND name = {2} AND token = {3} AND expires > {now}"),
            release: r(
                "DELETE FROM {locks} WHERE ns = {1} AND name = {2} AND token = {3} AND expires > {now}",
            ),
            clean_locks: r("DELETE FROM {locks} WHERE ns = {1} AND expires <= {now}"),
            fence: r(syntax.fence),
            list_locks: r(
                "SELECT name, token, {time_left} FROM {locks} WHERE ns = {1} ORDER BY name",
            ),
            force_release: r("DELETE FROM {locks} WHERE ns = {1} AND name = {2}"),
            migrations_table: r(schema::MIGRATIONS_TABLE),
            schema_version: r("SELECT MAX(version) FROM {migrations}"),
            record_migration: r(
                "INSERT INTO {migrations} (version, applied_at) VALUES ({1}, {now_millis})",
            ),
        }
    }
}

/// Fills `template` with the dialect's fragments, placeholders and the table names.
fn render(syntax: &Syntax, tables: &Tables, template: &str) -> Statement {
    let text = template
        .replace("{upsert}", syntax.upsert)
        .replace("{expires_in}", syntax.expires_in)
        .replace("{time_left}", syntax.time_left)
        .replace("{now_millis}", syntax.now_millis)
        .replace("{now}", syntax.now);
    let (sql, order) = placeholders(&text, syntax);
    let binds = if syntax.numbered {
        // Numbered placeholders refer to the bound values by position: bind each once.
        (0..order.iter().max().map_or(0, |last| last + 1)).collect()
    } else {
        order
    };
    Statement {
        sql: tables.render(&sql),
        binds: binds.into_boxed_slice(),
    }
}

/// Replaces each `{n}` (n from 1) in `text` by the dialect's placeholder; also returns
/// the parameter indexes (from 0) in the order they appear. Other braces are kept.
fn placeholders(text: &str, syntax: &Syntax) -> (String, Vec<usize>) {
    let mut sql = String::with_capacity(text.len());
    let mut order = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        sql.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let number = after
            .find('}')
            .and_then(|close| Some((after[..close].parse::<usize>().ok()?, close)));
        match number {
            Some((n, close)) if n > 0 => {
                sql.push_str(syntax.placeholder);
                if syntax.numbered {
                    sql.push_str(&n.to_string());
                }
                order.push(n - 1);
                rest = &after[close + 1..];
            }
            _ => {
                sql.push('{');
                rest = after;
            }
        }
    }
    sql.push_str(rest);
    (sql, order)
}

#[cfg(test)]
mod tests;
