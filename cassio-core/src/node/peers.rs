//! Connections to peers: pooled, one per peer and thread of this node (a
//! request's messages stay on its thread), and which peers stopped
//! answering.
//!
//! A peer stalls when it is up but does not answer: a stopped process, a
//! partition that gossip does not see because other nodes still hear the
//! peer. Connecting to it then hangs until the connect timeout, and a
//! request that waited for that would also hold up the replicas asked
//! after it. So:
//!
//! - A connection being opened is a task of its own, one per slot, which
//!   every request that wants it waits on. The coordinator's replica
//!   requests never wait for it where they are made ([`PeerPool::reach`]):
//!   each one's reply waits on it beside the other replicas' replies (as
//!   Cassandra queues messages for a peer being connected to).
//! - Once a request to a peer timed out (or connecting did), the peer is
//!   *stalled*: requests fail at once with [`Error::PeerStalled`] (a read
//!   asks another replica, a write keeps a hint) until, every
//!   [`STALLED_RETRY_MS`], the next request connects again; a replica
//!   request then rides on that connect, so the first one after the peer
//!   recovers reaches it.
//!
//! A peer that refuses or closes connections is not stalled: the next
//! request connects again, which fails fast if it is still down. A timeout
//! stalls the peer only if it happened on the connection still pooled: one
//! on a connection since replaced says nothing of the new one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::workers::current_thread_index;
use crate::error::{Error, Result};
use crate::net::{Connection, TlsClient, Transport};
use crate::proto::Hello;

/// How often a stalled peer is connected to again.
const STALLED_RETRY_MS: u64 = 1000;

/// A failing TLS connection to a peer is logged at most this often.
const TLS_FAILURE_LOG_INTERVAL_MS: u64 = 10_000;

/// A connect under way, as a future any number of requests may wait on:
/// the connection, or why it could not be opened. It runs as a task of its
/// own, so it ends (and leaves its outcome in the slot) even when no one
/// waits for it any more.
pub(crate) type Connecting =
    Shared<BoxFuture<'static, std::result::Result<Arc<Connection>, String>>>;

type SlotKey = (usize, SocketAddr);

enum Slot {
    Open(Arc<Connection>),
    /// Being opened since `started_ms`.
    Connecting {
        connecting: Connecting,
        started_ms: u64,
    },
    /// Requests fail at once; from `retry_from_ms` the next one connects
    /// again.
    Stalled {
        retry_from_ms: u64,
    },
}

/// The connection `connecting` opens to `addr`, once it has.
pub(crate) async fn connected(connecting: Connecting, addr: SocketAddr) -> Result<Arc<Connection>> {
    connecting.await.map_err(|reason| Error::PeerUnreachable {
        addr: addr.to_string(),
        reason,
    })
}

/// What a slot offers a request now.
enum Found {
    Open(Arc<Connection>),
    Connecting(Connecting),
    Stalled,
    /// A stalled peer's turn to be connected to again.
    Retry,
    /// Nothing open or being opened.
    Absent,
}

/// A peer's connection as a replica request finds it ([`PeerPool::reach`]).
pub(crate) enum Reach {
    Open(Arc<Connection>),
    /// Being opened: the request goes once it is, and fails if it cannot be.
    Connecting(Connecting),
    /// Stalled: not to be waited for.
    Stalled,
}

/// Where requests get a connection to a peer.
pub(crate) struct PeerPool<T: Transport> {
    transport: T,
    hello: Hello,
    frame_bytes_max: usize,
    timeout: Duration,
    tls: Option<TlsClient>,
    started: Instant,
    /// Looked up for every replica request: FNV, not SipHash.
    slots: Mutex<fnv::FnvHashMap<SlotKey, Slot>>,
    /// From when (ms) a failed TLS connection to a peer is logged again.
    tls_failure_log_from_ms: AtomicU64,
}

impl<T: Transport> PeerPool<T> {
    /// A pool that says `hello` to peers, over TLS if `tls` is given, and
    /// waits `timeout` for a connection.
    pub(crate) fn new(
        transport: T,
        hello: Hello,
        frame_bytes_max: usize,
        timeout: Duration,
        tls: Option<TlsClient>,
    ) -> Self {
        PeerPool {
            transport,
            hello,
            frame_bytes_max,
            timeout,
            tls,
            started: Instant::now(),
            slots: Mutex::default(),
            tls_failure_log_from_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The longest a connect runs, and the pause before the next one.
    fn connect_turn_ms(&self) -> u64 {
        self.timeout.as_millis() as u64 + STALLED_RETRY_MS
    }

    /// What this thread's slot for `addr` offers a request now.
    fn find(&self, slots: &fnv::FnvHashMap<SlotKey, Slot>, key: &SlotKey, now_ms: u64) -> Found {
        match slots.get(key) {
            Some(Slot::Open(conn)) if !conn.is_closed() => Found::Open(conn.clone()),
            // A connect ends within its timeout; one older was lost (its
            // runtime shut down) and is started again.
            Some(Slot::Connecting {
                connecting,
                started_ms,
            }) if now_ms < started_ms + self.connect_turn_ms() => {
                Found::Connecting(connecting.clone())
            }
            Some(Slot::Stalled { retry_from_ms }) if now_ms < *retry_from_ms => Found::Stalled,
            Some(Slot::Stalled { .. }) => Found::Retry,
            _ => Found::Absent,
        }
    }

    /// Starts connecting for `key` in a task of its own, which keeps the
    /// outcome in the slot.
    fn spawn_connect(self: &Arc<Self>, key: SlotKey) -> Connecting {
        let pool = self.clone();
        let task = tokio::spawn(async move { pool.connect(key).await.map_err(|e| e.to_string()) });
        task.map(|joined| joined.unwrap_or_else(|e| Err(format!("connect task: {e}"))))
            .boxed()
            .shared()
    }

    /// Connects to a stalled peer again, for the request that found it
    /// due: the others still fail at once until that succeeds (the retry
    /// time moves past the connect's timeout, so one runs at a time).
    fn retry(
        self: &Arc<Self>,
        slots: &mut fnv::FnvHashMap<SlotKey, Slot>,
        key: SlotKey,
        now_ms: u64,
    ) -> Connecting {
        let retry_from_ms = now_ms + self.connect_turn_ms();
        slots.insert(key, Slot::Stalled { retry_from_ms });
        self.spawn_connect(key)
    }

    /// Starts the first connect for `key`: the requests until it is open
    /// wait for it.
    fn first_connect(
        self: &Arc<Self>,
        slots: &mut fnv::FnvHashMap<SlotKey, Slot>,
        key: SlotKey,
        now_ms: u64,
    ) -> Connecting {
        let connecting = self.spawn_connect(key);
        let slot = Slot::Connecting {
            connecting: connecting.clone(),
            started_ms: now_ms,
        };
        slots.insert(key, slot);
        connecting
    }

    /// This thread's connection to the peer at `addr` for a replica
    /// request, without waiting: the pooled one, or one being opened (a
    /// connect is started if none is under way, or if a stalled peer is due
    /// to be tried again), or none if the peer stalled.
    pub(crate) fn reach(self: &Arc<Self>, addr: SocketAddr) -> Reach {
        let (key, now_ms) = ((current_thread_index(), addr), self.now_ms());
        let mut slots = self.slots.lock();
        match self.find(&slots, &key, now_ms) {
            Found::Open(conn) => Reach::Open(conn),
            Found::Connecting(connecting) => Reach::Connecting(connecting),
            Found::Stalled => Reach::Stalled,
            Found::Retry => Reach::Connecting(self.retry(&mut slots, key, now_ms)),
            Found::Absent => Reach::Connecting(self.first_connect(&mut slots, key, now_ms)),
        }
    }

    /// This thread's connection to the peer at `addr`: the pooled one, or
    /// one being opened (started if none is), or at once
    /// [`Error::PeerStalled`] if the peer stalled (its next connect, when
    /// due, starts in the background).
    pub(crate) async fn get(self: &Arc<Self>, addr: SocketAddr) -> Result<Arc<Connection>> {
        let (key, now_ms) = ((current_thread_index(), addr), self.now_ms());
        let stalled = || Error::PeerStalled {
            addr: addr.to_string(),
        };
        let connecting = {
            let mut slots = self.slots.lock();
            match self.find(&slots, &key, now_ms) {
                Found::Open(conn) => return Ok(conn),
                Found::Connecting(connecting) => connecting,
                Found::Absent => self.first_connect(&mut slots, key, now_ms),
                Found::Stalled => return Err(stalled()),
                Found::Retry => {
                    // Not waited for: the slot keeps its outcome.
                    drop(self.retry(&mut slots, key, now_ms));
                    return Err(stalled());
                }
            }
        };
        connected(connecting, addr).await
    }

    /// A connection to `addr` for one caller, outside the pool, with the
    /// connect's own error (a refused handshake, a TLS failure).
    pub(crate) async fn open_unpooled(&self, addr: SocketAddr) -> Result<Connection> {
        Connection::open_with(
            &self.transport,
            addr,
            self.hello.clone(),
            self.frame_bytes_max,
            self.timeout,
            self.tls.as_ref(),
        )
        .await
    }

    /// Opens a connection for `key` and keeps it; a connect that timed out
    /// marks the peer stalled.
    async fn connect(&self, key: SlotKey) -> Result<Arc<Connection>> {
        let addr = key.1;
        let opened = self.open_unpooled(addr).await;
        let now_ms = self.now_ms();
        let mut slots = self.slots.lock();
        let e = match opened {
            Ok(conn) => {
                let conn = Arc::new(conn);
                slots.insert(key, Slot::Open(conn.clone()));
                return Ok(conn);
            }
            Err(e) => e,
        };
        // A connection another request opened meanwhile stays.
        if !matches!(slots.get(&key), Some(Slot::Open(_))) {
            if let Error::Timeout { .. } = e {
                let retry_from_ms = now_ms + STALLED_RETRY_MS;
                slots.insert(key, Slot::Stalled { retry_from_ms });
            } else {
                slots.remove(&key);
            }
        }
        drop(slots);
        if let Error::Tls { .. } = e {
            self.log_tls_failure(addr, &e);
        }
        Err(e)
    }

    /// Peers that cannot talk TLS to each other is a setting to fix
    /// (certificates, CA): said once every 10 s, not on every try.
    fn log_tls_failure(&self, addr: SocketAddr, error: &Error) {
        let now_ms = self.now_ms();
        let from_ms = self.tls_failure_log_from_ms.load(Ordering::Relaxed);
        let next_ms = now_ms + TLS_FAILURE_LOG_INTERVAL_MS;
        if now_ms >= from_ms
            && self
                .tls_failure_log_from_ms
                .compare_exchange(from_ms, next_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(peer = %addr, %error, "cannot reach a peer over TLS");
        }
    }

    /// A request on `conn` failed with `error`: a timeout stalls the peer
    /// ([`Self::stalled`]). Any other failure closed `conn` (requests pass
    /// over a closed connection), or was not the connection's.
    pub(crate) fn failed(&self, conn: &Arc<Connection>, error: &Error) {
        if let Error::Timeout { .. } = error {
            self.stalled(conn);
        }
    }

    /// A request on `conn` was not answered in time: if `conn` is still
    /// pooled, the peer is stalled, and the first request after
    /// [`STALLED_RETRY_MS`] connects again (at once, a peer that still
    /// completes handshakes but answers nothing would be back at once). A
    /// connection since replaced stays as it is.
    pub(crate) fn stalled(&self, conn: &Arc<Connection>) {
        let retry_from_ms = self.now_ms() + STALLED_RETRY_MS;
        let addr = conn.addr();
        let mut slots = self.slots.lock();
        for (_, slot) in slots.iter_mut().filter(|(key, _)| key.1 == addr) {
            if matches!(slot, Slot::Open(pooled) if Arc::ptr_eq(pooled, conn)) {
                *slot = Slot::Stalled { retry_from_ms };
            }
        }
    }
}
