//! Byte encoding of one (key, cell) entry, shared by commit-log records and
//! SSTable data blocks so the two can never disagree.
//!
//! Layout, little-endian:
//! ```text
//! flags u8 (bit 0 tombstone, bit 1 has expiry)
//! key_len varint, value_len varint
//! timestamp u64, [expires_at_ms u64]
//! key bytes, value bytes
//! ```

use super::cell::{Cell, CellValue};

const FLAG_TOMBSTONE: u8 = 1;
const FLAG_EXPIRY: u8 = 2;
const FLAGS_KNOWN: u8 = FLAG_TOMBSTONE | FLAG_EXPIRY;

/// Why bytes failed to decode; the caller adds the file and offset.
pub(crate) type DecodeError = &'static str;

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a varint from the front of `buf`, returning it and the bytes used.
pub(crate) fn get_varint(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err("truncated or overlong varint")
}

pub(crate) fn get_u64(buf: &[u8], at: usize) -> Result<u64, DecodeError> {
    buf.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("slice of 8")))
        .ok_or("truncated u64")
}

pub(crate) fn get_u32(buf: &[u8], at: usize) -> Result<u32, DecodeError> {
    buf.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("slice of 4")))
        .ok_or("truncated u32")
}

/// Length-prefixed bytes: varint length then the bytes.
pub(crate) fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Reads length-prefixed bytes, returning them and the bytes used.
pub(crate) fn get_bytes(buf: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    let (len, n) = get_varint(buf)?;
    let end = n.checked_add(len as usize).ok_or("length overflow")?;
    let bytes = buf.get(n..end).ok_or("truncated byte string")?;
    Ok((bytes, end))
}

pub(crate) fn encode_entry(buf: &mut Vec<u8>, key: &[u8], cell: &Cell) {
    let (mut flags, value): (u8, &[u8]) = match &cell.value {
        CellValue::Value(v) => (0, v),
        CellValue::Tombstone => (FLAG_TOMBSTONE, &[]),
    };
    if cell.expires_at_ms.is_some() {
        flags |= FLAG_EXPIRY;
    }
    buf.push(flags);
    put_varint(buf, key.len() as u64);
    put_varint(buf, value.len() as u64);
    buf.extend_from_slice(&cell.timestamp.to_le_bytes());
    if let Some(at) = cell.expires_at_ms {
        buf.extend_from_slice(&at.to_le_bytes());
    }
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
}

/// One entry decoded in place: the key and value borrow the buffer.
pub(crate) struct EntryRef<'a> {
    pub(crate) key: &'a [u8],
    flags: u8,
    timestamp: u64,
    expires_at_ms: Option<u64>,
    value: &'a [u8],
}

impl EntryRef<'_> {
    pub(crate) fn to_cell(&self) -> Cell {
        let value = if self.flags & FLAG_TOMBSTONE != 0 {
            CellValue::Tombstone
        } else {
            CellValue::Value(self.value.to_vec())
        };
        Cell {
            timestamp: self.timestamp,
            expires_at_ms: self.expires_at_ms,
            value,
        }
    }
}

/// Decodes one entry from the front of `buf` without copying: (entry, bytes used).
pub(crate) fn decode_entry_ref(buf: &[u8]) -> Result<(EntryRef<'_>, usize), DecodeError> {
    let flags = *buf.first().ok_or("empty entry")?;
    if flags & !FLAGS_KNOWN != 0 {
        return Err("unknown entry flags");
    }
    let mut at = 1;
    let (key_len, n) = get_varint(&buf[at..])?;
    at += n;
    let (value_len, n) = get_varint(&buf[at..])?;
    at += n;
    let timestamp = get_u64(buf, at)?;
    at += 8;
    let expires_at_ms = if flags & FLAG_EXPIRY != 0 {
        let v = get_u64(buf, at)?;
        at += 8;
        Some(v)
    } else {
        None
    };
    let key_end = at.checked_add(key_len as usize).ok_or("length overflow")?;
    let value_end = key_end
        .checked_add(value_len as usize)
        .ok_or("length overflow")?;
    let key = buf.get(at..key_end).ok_or("truncated key")?;
    let value = buf.get(key_end..value_end).ok_or("truncated value")?;
    if flags & FLAG_TOMBSTONE != 0 && !value.is_empty() {
        return Err("tombstone with a value");
    }
    let entry = EntryRef {
        key,
        flags,
        timestamp,
        expires_at_ms,
        value,
    };
    Ok((entry, value_end))
}

/// Decodes one entry from the front of `buf`: (key, cell, bytes used).
pub(crate) fn decode_entry(buf: &[u8]) -> Result<(&[u8], Cell, usize), DecodeError> {
    let (entry, used) = decode_entry_ref(buf)?;
    Ok((entry.key, entry.to_cell(), used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_round_trip() {
        let mut expiring = Cell::value("value", 42);
        expiring.expires_at_ms = Some(7);
        for (key, cell) in [
            (&b"k"[..], Cell::value("v", 1)),
            (b"key", Cell::tombstone(u64::MAX)),
            (b"exp", expiring),
        ] {
            let mut buf = Vec::new();
            encode_entry(&mut buf, key, &cell);
            let (k, c, used) = decode_entry(&buf).unwrap();
            assert_eq!((k, c, used), (key, cell, buf.len()));
        }
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_entry(&bytes);
        }

        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(get_varint(&buf).unwrap(), (v, buf.len()));
        }
    }
}
