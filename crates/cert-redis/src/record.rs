//! How one value is kept in Redis: a single string, a fixed 20-byte header followed by the
//! value's bytes, so the bytes and their metadata change together in one `SET` and `stat`
//! reads the header alone with one `GETRANGE`.
//!
//! | bytes | content |
//! |---|---|
//! | 0..3 | `b"cs1"`: magic and layout version |
//! | 3 | reserved, 0 |
//! | 4..12 | modification time, nanoseconds since the Unix epoch, big-endian `u64` |
//! | 12..20 | the value's size in bytes, big-endian `u64` |
//! | 20.. | the value |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cert_core::{Error, Result};

/// The header's length in bytes.
pub(crate) const HEADER_LEN: usize = 20;

const MAGIC: &[u8; 3] = b"cs1";

/// The header and bytes of `value`, modified at `modified`, as one record.
pub(crate) fn encode(value: &[u8], modified: SystemTime) -> Vec<u8> {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut record = Vec::with_capacity(HEADER_LEN + value.len());
    record.extend_from_slice(MAGIC);
    record.push(0);
    record.extend_from_slice(&nanos.to_be_bytes());
    record.extend_from_slice(&(value.len() as u64).to_be_bytes());
    record.extend_from_slice(value);
    record
}

/// What a record's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) modified: SystemTime,
    pub(crate) size: u64,
}

fn corrupt(key: &str, why: &'static str) -> Error {
    Error::corrupt(
        key,
        std::io::Error::new(std::io::ErrorKind::InvalidData, why),
    )
}

/// Reads the header at the start of `bytes` (the record, or its first [`HEADER_LEN`]
/// bytes).
pub(crate) fn header(key: &str, bytes: &[u8]) -> Result<Header> {
    let head = bytes
        .get(..HEADER_LEN)
        .ok_or_else(|| corrupt(key, "record shorter than its header"))?;
    if &head[..3] != MAGIC {
        return Err(corrupt(
            key,
            "record does not start with the certstore header",
        ));
    }
    let number = |range: std::ops::Range<usize>| {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(&head[range]);
        u64::from_be_bytes(buf)
    };
    Ok(Header {
        modified: UNIX_EPOCH + Duration::from_nanos(number(4..12)),
        size: number(12..20),
    })
}

/// The value inside a whole record, checked against the size its header gives.
pub(crate) fn value(key: &str, mut record: Vec<u8>) -> Result<Vec<u8>> {
    let header = header(key, &record)?;
    if (record.len() - HEADER_LEN) as u64 != header.size {
        return Err(corrupt(
            key,
            "value length differs from the size in its header",
        ));
    }
    record.drain(..HEADER_LEN);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let now = SystemTime::now();
        for value in [
            &b""[..],
            b"x",
            &[0u8, 255, 10, 13][..],
            &vec![7u8; 5000][..],
        ] {
            let record = encode(value, now);
            assert_eq!(record.len(), HEADER_LEN + value.len());
            let head = header("k", &record[..HEADER_LEN]).unwrap();
            assert_eq!(head.modified, now);
            assert_eq!(head.size, value.len() as u64);
            assert_eq!(super::value("k", record).unwrap(), value);
        }
    }

    #[test]
    fn damage_is_corrupt() {
        let record = encode(b"hello", SystemTime::now());
        let mut truncated = record.clone();
        truncated.pop();
        let mut foreign = record.clone();
        foreign[0] = b'x';
        for bad in [truncated, foreign, b"short".to_vec(), Vec::new()] {
            assert!(matches!(value("k", bad), Err(Error::Corrupt { .. })));
        }
        assert!(matches!(header("k", b"cs"), Err(Error::Corrupt { .. })));
    }
}
