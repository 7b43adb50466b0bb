//! The Lua scripts that make multi-key changes atomic on the server.
//!
//! Each script runs as one unit in Redis: no other command sees its intermediate state.
//! `redis::Script` sends them by SHA1 (`EVALSHA`) and loads them again by itself after a
//! server restart emptied the script cache.

use std::sync::LazyLock;

use redis::Script;

/// The body of [`STORE`] and [`STORE_FENCED`].
const STORE_BODY: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
";

/// The check [`STORE_FENCED`] and [`DELETE_FENCED`] run before their body: nothing is done
/// and nil is returned unless the lock, the last of the KEYS, holds the token, the last of
/// the ARGV. A lock whose lease ran out is gone from the server (`PX`), so an expired or
/// taken-over lease never matches. Both being last leaves the body's own indices as they
/// are in the unfenced script.
const FENCE: &str = r"
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then return false end
";

/// Stores a value (creating or overwriting it) and makes sure its key is in the index,
/// together, in one round trip. Re-adding a key the index already holds, with the same
/// score, changes nothing.
///
/// KEYS[1] the value's record, KEYS[2] the index; ARGV[1] the record (header and bytes),
/// ARGV[2] the storage key.
pub(crate) static STORE: LazyLock<Script> = LazyLock::new(|| Script::new(STORE_BODY));

/// [`STORE`], run only while a lock is held by a token, checked in the same script so no
/// takeover can come between the check and the write.
///
/// KEYS and ARGV as for [`STORE`], then KEYS[3] the lock and ARGV[3] the token. Returns 1
/// when stored, nil when the lock is not held by the token (nothing is written).
pub(crate) static STORE_FENCED: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{FENCE}{STORE_BODY}")));

/// The body of [`DELETE`] and [`DELETE_FENCED`].
const DELETE_BODY: &str = r"
local removed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local batch = tonumber(ARGV[5])
local below = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[2], ARGV[3], 'LIMIT', 0, batch)
for _, key in ipairs(below) do
  redis.call('DEL', ARGV[4] .. key)
end
if #below > 0 then
  redis.call('ZREM', KEYS[2], unpack(below))
end
local more = 0
if #below == batch then more = 1 end
return {removed + #below, more}
";

/// Deletes a key and up to `batch` keys below it, values and index entries together.
///
/// KEYS[1] the key's record, KEYS[2] the index; ARGV[1] the storage key, ARGV[2] and
/// ARGV[3] the lexicographic range of the keys below it, ARGV[4] the prefix of records'
/// names, ARGV[5] the batch size. Returns `{removed, more}`: how many keys holding
/// values were removed, and 1 when keys below may remain (call again).
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_BODY));

/// [`DELETE`], run only while a lock is held by a token, checked in the same script.
///
/// KEYS and ARGV as for [`DELETE`], then KEYS[3] the lock and ARGV[6] the token. Returns
/// what [`DELETE`] returns, or nil when the lock is not held by the token (nothing is
/// deleted).
pub(crate) static DELETE_FENCED: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{FENCE}{DELETE_BODY}")));

/// The header of the first key below a prefix (its modification time stands for the
/// prefix's), or nil when no key lies below it.
///
/// KEYS[1] the index; ARGV[1] and ARGV[2] the lexicographic range of the keys below the
/// prefix, ARGV[3] the prefix of records' names, ARGV[4] the header's last byte offset.
pub(crate) static STAT_PREFIX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local first = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, 1)
if #first == 0 then return false end
return redis.call('GETRANGE', ARGV[3] .. first[1], 0, tonumber(ARGV[4]))
",
    )
});

/// Extends a lock's expiry when it is still held by the given token.
///
/// KEYS[1] the lock; ARGV[1] the token, ARGV[2] the new time to live in milliseconds.
/// Returns 1 when extended, 0 when the lock is held by another token or by none.
pub(crate) static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Deletes a lock when it is still held by the given token.
///
/// KEYS[1] the lock; ARGV[1] the token. Returns 1 when released, 0 otherwise.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});
