//! The Lua scripts that make multi-key changes atomic on the server.
//!
//! Each script runs as one unit in Redis: no other command sees its intermediate state.
//! `redis::Script` sends them by SHA1 (`EVALSHA`) and loads them again by itself after a
//! server restart emptied the script cache.

use std::sync::LazyLock;

use redis::Script;

/// The check [`STORE_FENCED`] and [`DELETE_FENCED`] run before their body: nothing is done
/// and nil is returned unless the lock, the last of the KEYS, holds the token, the last of
/// the ARGV. A lock whose lease ran out is gone from the server (`PX`), so an expired or
/// taken-over lease never matches. Both being last leaves the body's own indices as they
/// are in the unfenced forms.
const FENCE: &str = r"
if redis.call('GET', KEYS[#KEYS]) ~= ARGV[#ARGV] then return false end
";

/// Stores a value (creating or overwriting it), its modification time and its index
/// entry together, only while a lock is held by a token, checked in the same script so no
/// takeover can come between the check and the write. (The unfenced store sends the same
/// three commands as one `MULTI`/`EXEC` transaction.)
///
/// KEYS[1] the value's string, KEYS[2] the index, KEYS[3] the modification times, KEYS[4]
/// the lock; ARGV[1] the bytes to store, ARGV[2] the storage key, ARGV[3] the modification
/// time (nanoseconds), ARGV[4] the token. Returns 1 when stored, nil when the lock is not
/// held by the token (nothing is written).
pub(crate) static STORE_FENCED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{FENCE}{}",
        r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
"
    ))
});

/// The body of [`DELETE`] and [`DELETE_FENCED`].
const DELETE_BODY: &str = r"
local removed = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
local batch = tonumber(ARGV[5])
local below = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[2], ARGV[3], 'LIMIT', 0, batch)
for _, key in ipairs(below) do
  redis.call('DEL', ARGV[4] .. key)
end
if #below > 0 then
  redis.call('ZREM', KEYS[2], unpack(below))
  redis.call('HDEL', KEYS[3], unpack(below))
end
local more = 0
if #below == batch then more = 1 end
return {removed + #below, more}
";

/// Deletes a key and up to `batch` keys below it, values, modification times and index
/// entries together.
///
/// KEYS[1] the key's string, KEYS[2] the index, KEYS[3] the modification times; ARGV[1] the storage key, ARGV[2] and
/// ARGV[3] the lexicographic range of the keys below it, ARGV[4] the prefix of records'
/// names, ARGV[5] the batch size. Returns `{removed, more}`: how many keys holding
/// values were removed, and 1 when keys below may remain (call again).
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_BODY));

/// [`DELETE`], run only while a lock is held by a token, checked in the same script.
///
/// KEYS and ARGV as for [`DELETE`], then KEYS[4] the lock and ARGV[6] the token. Returns
/// what [`DELETE`] returns, or nil when the lock is not held by the token (nothing is
/// deleted).
pub(crate) static DELETE_FENCED: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{FENCE}{DELETE_BODY}")));

/// What `stat` needs of a key, or of the first key below it when it holds no value: the
/// first bytes of its string (a headed record's header), the string's length and its
/// modification time field.
///
/// KEYS[1] the key's string, KEYS[2] the index, KEYS[3] the modification times; ARGV[1]
/// the storage key, ARGV[2] and ARGV[3] the lexicographic range of the keys below it,
/// ARGV[4] the prefix of strings' names, ARGV[5] the header's last byte offset. Returns
/// `{1, head, length, time}` for a key holding a value, `{0, head, length, time}` for a
/// prefix (describing its first key; `{0, '', 0, false}` when that key's string is gone),
/// nil when neither. `time` is false when the field is missing.
pub(crate) static STAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local function describe(name, key)
  if redis.call('EXISTS', name) == 0 then return false end
  return {
    redis.call('GETRANGE', name, 0, tonumber(ARGV[5])),
    redis.call('STRLEN', name),
    redis.call('HGET', KEYS[3], key),
  }
end
local found = describe(KEYS[1], ARGV[1])
if found then return {1, found[1], found[2], found[3]} end
local first = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[2], ARGV[3], 'LIMIT', 0, 1)
if #first == 0 then return false end
found = describe(ARGV[4] .. first[1], first[1])
if found then return {0, found[1], found[2], found[3]} end
return {0, '', 0, false}
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
