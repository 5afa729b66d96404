//! The memtable's key type. Keys up to [`INLINE_BYTES`] live inside the
//! map's node itself: a lookup compares keys at every level, and a key
//! behind a pointer costs a cache miss per comparison (it was the largest
//! item in the storage benchmark's profile). Longer keys go on the heap.

use std::borrow::Borrow;
use std::cmp::Ordering;

/// Longest key stored inline; the enum stays 32 bytes.
pub(crate) const INLINE_BYTES: usize = 30;

#[derive(Clone)]
pub(crate) enum MemKey {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Heap(Box<[u8]>),
}

impl MemKey {
    pub(crate) fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_BYTES {
            let mut bytes = [0u8; INLINE_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            MemKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            MemKey::Heap(key.into())
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            MemKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            MemKey::Heap(bytes) => bytes,
        }
    }
}

// Ordering and equality are exactly those of the bytes, which `Borrow<[u8]>`
// requires so that lookups by `&[u8]` find what was inserted.
impl Borrow<[u8]> for MemKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for MemKey {}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn orders_exactly_like_the_bytes(a in proptest::collection::vec(any::<u8>(), 0..40),
                                         b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (ka, kb) = (MemKey::new(&a), MemKey::new(&b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka.as_slice(), &a[..]);
        }
    }
}
