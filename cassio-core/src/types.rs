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
