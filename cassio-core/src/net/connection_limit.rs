//! How many client connections a node holds open, and the most it may: a
//! flood of idle clients must not take the file descriptors the node needs
//! for its peers, its commit log and its tables (Redis's `maxclients`).
//! Redis-protocol and native clients share one limit; peers never count. A
//! Redis-protocol connection counts from accept, a native one from its
//! handshake (which says whether it is a client), until its task ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The open connections a limit counts, and the limit.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    open: AtomicUsize,
    refused: AtomicU64,
    max: usize,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Admitted(Arc<ConnectionLimit>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionLimit {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            max,
        })
    }

    /// A place for a new connection, or `None` (counted as refused) when
    /// `max` are open.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max).then_some(open + 1)
            });
        match taken {
            Ok(_) => Some(Admitted(self.clone())),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused since the node started.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Logs a refused connection on `port`: the first, and every
    /// thousandth after, so that a flood does not flood the log too.
    pub(crate) fn log_refusal(&self, port: &str) {
        let refused = self.refused();
        if refused == 1 || refused.is_multiple_of(1000) {
            tracing::warn!(
                max_clients = self.max,
                refused,
                "refused a {port} client connection: max_clients are open"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_taken_up_to_the_limit_and_freed_on_drop() {
        let limit = ConnectionLimit::new(2);
        let first = limit.admit().expect("first");
        let second = limit.admit().expect("second");
        assert!(limit.admit().is_none(), "a third is refused");
        assert_eq!((limit.open(), limit.refused()), (2, 1));
        drop(first);
        assert_eq!(limit.open(), 1);
        let third = limit.admit().expect("a freed place is taken again");
        drop((second, third));
        assert_eq!((limit.open(), limit.refused()), (0, 1));
    }
}
