//! [`LockAdmin`] for [`RedisStorage`]: locks listed by `SCAN` over the namespace's lock
//! keys, with their token (`GET`) and time left (`PTTL`, the server's clock).

use std::time::Duration;

use async_trait::async_trait;
use cert_core::{LockAdmin, LockInfo, Result, validate_key};

use crate::error::bounded;
use crate::storage::RedisStorage;

/// How many keys one `SCAN` step asks for.
const SCAN_COUNT: usize = 1_000;

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl LockAdmin for RedisStorage {
    async fn list_locks(&self) -> Result<Vec<LockInfo>> {
        let prefix = self.names.lock("");
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = bounded(
                self.timeout,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn),
            )
            .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
            }
            let replies: Vec<(Option<String>, i64)> =
                bounded(self.timeout, pipe.query_async(&mut conn)).await?;
            for (key, (token, pttl)) in chunk.iter().zip(replies) {
                // A lock released between SCAN and GET is gone: skip it.
                let (Some(token), Some(name)) = (token, key.strip_prefix(&prefix)) else {
                    continue;
                };
                let mut info = LockInfo::new(name, token);
                if pttl >= 0 {
                    info = info.with_expires_in(Duration::from_millis(pttl.unsigned_abs()));
                }
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn force_release(&self, name: &str) -> Result<bool> {
        validate_key(name)?;
        let mut conn = self.conn.clone();
        let removed: i64 = bounded(
            self.timeout,
            redis::cmd("DEL")
                .arg(self.names.lock(name))
                .query_async(&mut conn),
        )
        .await?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_escaped() {
        assert_eq!(glob_escape("{a*b}:lock:"), "{a\\*b}:lock:");
        assert_eq!(glob_escape("x?[y]\\"), "x\\?\\[y\\]\\\\");
    }
}
