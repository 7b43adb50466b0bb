//! The index: the sorted set of every key holding a value, read in `ZRANGEBYLEX` pages to
//! list a prefix, and walked in batches to delete one.

use cert_core::{
    Error, Lease, Result, is_below, range_end, range_start, validate_key, validate_prefix,
};

use crate::error::bounded;
use crate::scripts;
use crate::storage::RedisStorage;

/// How many index entries one listing request reads.
const LIST_PAGE: usize = 5_000;

/// How many keys below a prefix one delete request removes.
const DELETE_BATCH: usize = 1_000;

/// The `ZRANGEBYLEX` bounds of the keys strictly below `prefix`.
pub(crate) fn lex_range(prefix: &str) -> (String, String) {
    let min = if prefix.is_empty() {
        "-".to_owned()
    } else {
        format!("[{}", range_start(prefix))
    };
    let max = match range_end(prefix) {
        Some(end) => format!("({end}"),
        None => "+".to_owned(),
    };
    (min, max)
}

/// The direct child of `prefix` that `key` (below it) lies in.
fn child_of<'k>(key: &'k str, prefix: &str) -> &'k str {
    let skip = if prefix.is_empty() {
        0
    } else {
        prefix.len() + 1
    };
    match key.get(skip..).and_then(|rest| rest.find('/')) {
        Some(end) => &key[..skip + end],
        None => key,
    }
}

impl RedisStorage {
    /// The keys below `prefix` (every one when `recursive`, else the direct children),
    /// sorted, read from the index page by page.
    pub(crate) async fn list_index(&self, prefix: &str, recursive: bool) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let (mut min, max) = lex_range(prefix);
        let mut conn = self.conn.clone();
        let mut out: Vec<String> = Vec::new();
        loop {
            let page: Vec<String> = bounded(
                self.timeout,
                redis::cmd("ZRANGEBYLEX")
                    .arg(&self.names.index)
                    .arg(&min)
                    .arg(&max)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(LIST_PAGE)
                    .query_async(&mut conn),
            )
            .await?;
            let full = page.len() >= LIST_PAGE;
            let next = page.last().map(|last| {
                let child = child_of(last, prefix);
                if !recursive && child.len() < last.len() {
                    // Skip the rest of this child's subtree: its name is already listed.
                    format!("[{child}0")
                } else {
                    format!("({last}")
                }
            });
            for key in page {
                if !is_below(&key, prefix) {
                    continue;
                }
                if recursive {
                    out.push(key);
                } else {
                    let child = child_of(&key, prefix);
                    if out.last().map(String::as_str) != Some(child) {
                        out.push(child.to_owned());
                    }
                }
            }
            match next {
                Some(next) if full => min = next,
                _ => break,
            }
        }
        // Index order is bytewise, but a child's name can sort after a sibling key that
        // follows it in the index ("a/b-x" < "a/b/c"), so sort the children once more.
        if !recursive {
            out.sort_unstable();
            out.dedup();
        }
        Ok(out)
    }

    /// One batch of a delete; with `fence`, only while the lock holds the lease's token
    /// (`None` when it does not, and nothing was deleted).
    async fn delete_batch(
        &self,
        key: &str,
        min: &str,
        max: &str,
        fence: Option<&Lease>,
    ) -> Result<Option<(u64, bool)>> {
        let mut conn = self.conn.clone();
        let script = match fence {
            Some(_) => &scripts::DELETE_FENCED,
            None => &scripts::DELETE,
        };
        let mut call = script.prepare_invoke();
        call.key(self.names.value(key))
            .key(&self.names.index)
            .key(&self.names.modified)
            .arg(key)
            .arg(min)
            .arg(max)
            .arg(&self.names.value_prefix)
            .arg(DELETE_BATCH);
        if let Some(lease) = fence {
            call.key(self.names.lock(lease.name()))
                .arg(lease.token().as_str());
        }
        let reply: Option<(u64, u8)> = bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        Ok(reply.map(|(removed, more)| (removed, more == 1)))
    }

    /// Deletes `key` and every key below it, batch by batch, each batch fenced by `fence`
    /// when given.
    pub(crate) async fn delete_all(&self, key: &str, fence: Option<&Lease>) -> Result<()> {
        validate_key(key)?;
        if let Some(lease) = fence {
            validate_key(lease.name())?;
        }
        let (min, max) = lex_range(key);
        let mut total = 0;
        loop {
            let Some((removed, more)) = self.delete_batch(key, &min, &max, fence).await? else {
                return Err(Error::LockLost {
                    name: fence.map(Lease::name).unwrap_or_default().to_owned(),
                });
            };
            total += removed;
            if !more {
                break;
            }
        }
        if total == 0 {
            return Err(Error::not_found(key));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_children() {
        assert_eq!(lex_range(""), ("-".to_owned(), "+".to_owned()));
        assert_eq!(lex_range("a/b"), ("[a/b/".to_owned(), "(a/b0".to_owned()));
        assert_eq!(child_of("a/b/c", "a"), "a/b");
        assert_eq!(child_of("a/b", "a"), "a/b");
        assert_eq!(child_of("a/b", ""), "a");
        assert_eq!(child_of("z", ""), "z");
    }
}
