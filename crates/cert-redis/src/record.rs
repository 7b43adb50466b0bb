//! How one value is kept in Redis: its exact bytes, in the string `{ns}:v:<key>`, so
//! `redis-cli GET` returns what was stored; its modification time beside it, in the hash
//! `{ns}:modified` (field: the storage key, value: nanoseconds since the Unix epoch, in
//! decimal); its size is the string's length.
//!
//! Values written by releases before this layout are *headed records*: a fixed 20-byte
//! header followed by the value's bytes, the metadata inside the string.
//!
//! | bytes | content |
//! |---|---|
//! | 0..3 | `b"cs1"`: magic and layout version |
//! | 3 | reserved, 0 |
//! | 4..12 | modification time, nanoseconds since the Unix epoch, big-endian `u64` |
//! | 12..20 | the value's size in bytes, big-endian `u64` |
//! | 20.. | the value |
//!
//! They are still read (header and value apart, the header's time winning over any in the
//! hash), and rewritten as plain bytes on their next store. Whether a string is a headed
//! record is decided by its bytes alone: it starts with `cs1`, a zero byte, and its size
//! field equals its length minus 20. So that no plain value is ever taken for one, a value
//! whose own bytes pass that test (only crafted bytes do: no PEM, JSON or envelope starts
//! with `cs1`) is stored inside a header, which reading then removes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header's length in bytes.
pub(crate) const HEADER_LEN: usize = 20;

const MAGIC: &[u8; 4] = b"cs1\0";

/// Nanoseconds since the Unix epoch: what the `{ns}:modified` hash holds.
pub(crate) fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A modification time read back from the `{ns}:modified` hash; the Unix epoch when the
/// field is missing (a value written by hand) or not a number.
pub(crate) fn parse_nanos(field: Option<&str>) -> SystemTime {
    field
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(UNIX_EPOCH, |n| UNIX_EPOCH + Duration::from_nanos(n))
}

/// What a headed record's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) modified: SystemTime,
    pub(crate) size: u64,
}

/// The header at the start of `head` when the string it comes from, `len` bytes long, is
/// a headed record; `None` for a plain value.
pub(crate) fn header(head: &[u8], len: u64) -> Option<Header> {
    let head = head.get(..HEADER_LEN)?;
    if &head[..4] != MAGIC {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(&head[range]);
        u64::from_be_bytes(buf)
    };
    let size = number(12..20);
    (len.checked_sub(HEADER_LEN as u64) == Some(size)).then(|| Header {
        modified: UNIX_EPOCH + Duration::from_nanos(number(4..12)),
        size,
    })
}

/// The string to store for `value`: its own bytes, or, for a value that would read as a
/// headed record, the value inside one (modified at `modified`).
pub(crate) fn encode(value: &[u8], modified: SystemTime) -> std::borrow::Cow<'_, [u8]> {
    if header(value, value.len() as u64).is_none() {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut record = Vec::with_capacity(HEADER_LEN + value.len());
    record.extend_from_slice(MAGIC);
    record.extend_from_slice(&nanos(modified).to_be_bytes());
    record.extend_from_slice(&(value.len() as u64).to_be_bytes());
    record.extend_from_slice(value);
    std::borrow::Cow::Owned(record)
}

/// The value a stored string holds: the string itself, or the value inside a headed
/// record.
pub(crate) fn decode(mut stored: Vec<u8>) -> Vec<u8> {
    if header(&stored, stored.len() as u64).is_some() {
        stored.drain(..HEADER_LEN);
    }
    stored
}

/// A value's size and modification time from the first bytes of its string (`head`), the
/// string's length and its `{ns}:modified` field.
pub(crate) fn describe(head: &[u8], len: u64, modified: Option<&str>) -> Header {
    header(head, len).unwrap_or_else(|| Header {
        modified: parse_nanos(modified),
        size: len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A headed record as releases before the plain layout wrote it.
    fn headed(value: &[u8], modified: SystemTime) -> Vec<u8> {
        let mut record = b"cs1\0".to_vec();
        record.extend_from_slice(&nanos(modified).to_be_bytes());
        record.extend_from_slice(&(value.len() as u64).to_be_bytes());
        record.extend_from_slice(value);
        record
    }

    #[test]
    fn plain_values_are_stored_as_they_are() {
        let now = SystemTime::now();
        for value in [
            &b""[..],
            b"x",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            &[0u8, 255, 10, 13][..],
            &vec![7u8; 5000][..],
            // Starts like a header, but its size field does not match its length.
            &headed(b"abc", now)[..22],
            b"cs1\0short",
        ] {
            let stored = encode(value, now);
            assert!(matches!(stored, std::borrow::Cow::Borrowed(_)));
            assert_eq!(decode(stored.to_vec()), value);
            let info = describe(value, value.len() as u64, Some("5"));
            assert_eq!(info.size, value.len() as u64);
            assert_eq!(info.modified, UNIX_EPOCH + Duration::from_nanos(5));
        }
    }

    #[test]
    fn headed_records_are_read_with_their_header() {
        let then = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let record = headed(b"hello", then);
        assert_eq!(decode(record.clone()), b"hello");
        let info = describe(&record[..HEADER_LEN], record.len() as u64, Some("5"));
        assert_eq!(
            info,
            Header {
                modified: then,
                size: 5
            }
        );
    }

    #[test]
    fn a_value_that_looks_headed_is_wrapped_and_comes_back_whole() {
        let now = SystemTime::now();
        let crafted = headed(b"inner", UNIX_EPOCH);
        let stored = encode(&crafted, now).into_owned();
        assert_eq!(stored.len(), crafted.len() + HEADER_LEN);
        assert_eq!(decode(stored.clone()), crafted);
        let info = describe(&stored[..HEADER_LEN], stored.len() as u64, None);
        assert_eq!(info.size, crafted.len() as u64);
        assert_eq!(nanos(info.modified), nanos(now));
    }

    #[test]
    fn missing_or_bad_times_read_as_the_epoch() {
        assert_eq!(parse_nanos(None), UNIX_EPOCH);
        assert_eq!(parse_nanos(Some("soon")), UNIX_EPOCH);
        assert_eq!(parse_nanos(Some("7")), UNIX_EPOCH + Duration::from_nanos(7));
    }
}
