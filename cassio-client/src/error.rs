//! The client's error type: what went wrong, with the facts to act on.

use cassio_core::coordinator::ConsistencyLevel;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// None of the given or known nodes could be reached.
    #[error("no cassio node reachable (tried {tried})")]
    NoNodeReachable { tried: String },

    /// The cluster could not meet the consistency level: `required` answers
    /// were needed, `received` came. They count replicas of the key for a
    /// read or write, and nodes of the ring for a scan.
    #[error(
        "consistency level {level} not reached: {required} answers required, {received} received"
    )]
    QuorumNotReached {
        level: ConsistencyLevel,
        required: u32,
        received: u32,
    },

    /// The request itself was refused (too large, bad level...): retrying will not help.
    #[error("invalid request: {0}")]
    Invalid(String),

    /// A node answered with an error.
    #[error("{node} failed the request: {message}")]
    Server { node: String, message: String },

    /// Connecting, or the request, failed at the transport.
    #[error("{0}")]
    Transport(#[from] cassio_core::Error),

    /// The node sent an answer that does not fit the request.
    #[error("unexpected answer from {node}: {answer}")]
    Unexpected { node: String, answer: String },
}

impl Error {
    /// Whether another node might succeed where this one failed.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Error::Transport(_) | Error::Server { .. })
    }
}
