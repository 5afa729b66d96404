//! Small types shared by several layers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A node's name, unique in its cluster (`--name`). The ring orders nodes by
/// it. Shared, so cloning one (every request names its replicas) does not
/// allocate.
#[derive(Clone, Debug, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(Arc<str>);

impl std::hash::Hash for NodeId {
    /// The name's bytes, as equality compares them.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        // Clones of one id (the common case) compare without reading bytes.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl NodeId {
    pub fn new(name: impl Into<String>) -> Self {
        NodeId(Arc::from(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so tables line up.
        f.pad(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(Arc::from(s))
    }
}

/// A password (`--password`): `Debug` never shows it, and comparing it
/// takes the same time whichever byte differs.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(password: impl Into<String>) -> Self {
        Secret(password.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this password, in time that depends on the
    /// lengths only.
    pub fn matches(&self, given: &[u8]) -> bool {
        let own = self.0.as_bytes();
        let differing = own.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        own.len() == given.len() && differing == 0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.0.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when there is none (the prefix is empty or all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole_and_never_print() {
        let secret = Secret::new("s3cret");
        assert!(secret.matches(b"s3cret"));
        assert!(!secret.matches(b"s3cre"));
        assert!(!secret.matches(b"s3cret!"));
        assert!(!secret.matches(b"S3cret"));
        assert!(!secret.matches(b""));
        assert_eq!(format!("{secret:?}"), "Secret(****)");
    }

    #[test]
    fn prefix_successor_handles_ff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
