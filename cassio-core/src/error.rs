//! The crate's one error type. Variants carry the facts a caller needs to act
//! (which file, which offset, which limit), never just a string.

use std::path::PathBuf;

/// Result alias used across cassio-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure cassio-core reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system IO call failed on `path`.
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A block or record's stored CRC32 does not match its bytes.
    #[error(
        "checksum mismatch in {file} at offset {offset}: stored {expected:#010x}, computed {got:#010x}"
    )]
    ChecksumMismatch {
        file: PathBuf,
        offset: u64,
        expected: u32,
        got: u32,
    },

    /// A file's bytes cannot be what cassio wrote (bad magic, impossible
    /// lengths, truncated structures).
    #[error("corrupt file {file} at offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A file was written by a format version this build does not read.
    #[error("{file} has format version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        file: PathBuf,
        found: u32,
        supported: u32,
    },

    /// A key longer than the engine accepts.
    #[error("key is {len} bytes, the maximum is {max} bytes")]
    KeyTooLarge { len: usize, max: usize },

    /// A value longer than the configured maximum.
    #[error("value is {len} bytes, the maximum is {max} bytes (storage.value_bytes_max)")]
    ValueTooLarge { len: usize, max: usize },

    /// The empty key is reserved (it sorts before every key and cannot be scanned to).
    #[error("keys must not be empty")]
    EmptyKey,

    /// A configuration value that makes no sense; the message says which and why.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Another engine (or process) holds the data directory.
    #[error("data directory {path} is already in use by another engine")]
    DirectoryLocked { path: PathBuf },

    /// A background flush or compaction failed earlier; the engine refuses
    /// writes rather than acknowledge data it may not be able to persist.
    #[error("storage engine stopped accepting writes after a background failure: {0}")]
    BackgroundFailed(String),

    /// A write or fsync of the commit log failed; the log refuses writes
    /// from then on, since what reached the disk is unknown.
    #[error("commit log {path} failed ({reason}); writes are refused until the node restarts")]
    CommitLogFailed { path: PathBuf, reason: String },

    /// The engine is shutting down.
    #[error("storage engine is closed")]
    Closed,

    /// A frame longer than `frame_bytes_max`; the connection is closed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },

    /// Bytes on a connection that are not a valid message.
    #[error("malformed message: {0}")]
    MalformedMessage(String),

    /// A new node's name belongs to a member of the cluster it joins.
    #[error(
        "node name {name} is already taken in this cluster ({holder}): give this node another --name, or, if that node is gone for good, run `cassio removenode {name}` on a live node first"
    )]
    NameTaken { name: String, holder: String },

    /// A node restarting on its data was removed from the cluster meanwhile.
    #[error(
        "node {name} was removed from the cluster (cassio removenode: LEFT, as {seen_by} sees it), and its data is out of date: to bring it back, empty its data directory and start it again, and it joins as a new node"
    )]
    RemovedFromCluster { name: String, seen_by: String },

    /// A TLS handshake with a node failed (its certificate is not from the
    /// CA given, say).
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },

    /// The other side refused our handshake, saying why.
    #[error("handshake refused by {addr}: {reason}")]
    HandshakeRefused { addr: String, reason: String },

    /// The connection ended (closed by the peer, or failed) before an answer.
    #[error("connection to {addr} closed")]
    ConnectionClosed { addr: String },

    /// A request to the peer (or connecting to it) timed out lately; it is
    /// connected to again in the background, and not waited for meanwhile.
    #[error("peer {addr} stopped answering; reconnecting in the background")]
    PeerStalled { addr: String },

    /// Connecting to a peer failed, for a request that did not wait for
    /// the connect itself.
    #[error("cannot connect to peer {addr}: {reason}")]
    PeerUnreachable { addr: String, reason: String },

    /// An operation did not finish in time.
    #[error("{what} timed out after {after_ms} ms")]
    Timeout { what: String, after_ms: u64 },

    /// Something listens at `addr`, but did not answer the handshake as a
    /// cassio node does (another service, or a node's Redis port).
    #[error(
        "{addr} did not answer as a cassio node ({reason}); is it a node's native port (--listen), not its Redis port (--resp)?"
    )]
    NotANode { addr: String, reason: String },

    /// Fewer replicas answered than the consistency level needs.
    #[error(
        "consistency level {level} not reached: {required} replicas required, {received} received"
    )]
    QuorumNotReached {
        level: crate::coordinator::ConsistencyLevel,
        required: usize,
        received: usize,
    },

    /// Work handed to another thread ended without its result (it panicked
    /// or its runtime stopped).
    #[error("{what} failed: {reason}")]
    TaskFailed { what: String, reason: String },

    /// The remote node answered with an error.
    #[error("{node} answered with an error: {message}")]
    Remote { node: String, message: String },
}

impl Error {
    /// Wraps an IO error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// An error and its causes on one line, each cause once: an error's message
/// often quotes its source already (as [`Error::Io`] does), and printing the
/// chain as-is would repeat it. For binaries' final error messages.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut cause = Some(error);
    while let Some(error) = cause {
        let part = error.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_each_cause_once() {
        let io = Error::io("/data", std::io::Error::other("disk on fire"));
        assert_eq!(describe(&io), "io error on /data: disk on fire");
        let config = Error::InvalidConfig("vnodes must be at least 1".into());
        assert_eq!(describe(&config), config.to_string());
    }
}
