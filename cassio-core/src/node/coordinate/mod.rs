//! The coordinator's IO: any node runs clients' reads and writes here, a
//! batch at a time (one key, or every GET or SET of a pipeline). Writes go
//! to every replica (the local one applied directly, down ones hinted in one
//! write once the others are asked); each key's answer comes when its level
//! is met or cannot be. Reads
//! ask the replicas their level needs (more when one fails or is slow),
//! answer with the newest vote once enough are in, and repair stale
//! replicas among the voters: before answering at TWO and above, after at
//! ONE (through a replica, only its own copy votes at ONE). A batch costs
//! one message per remote replica, whatever its size.
//!
//! `writes.rs` and `reads.rs` hold the two batch paths; this module holds
//! what they share: replica lists, sending to a replica and collecting its
//! reply, and each key's phase until the batch is answered.

mod reads;
pub(crate) use reads::CellRead;
mod writes;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::{Instant, Sleep};

use super::durable::{synced, write_durably};
use super::peers::{PeerPool, Reach, connected};
use super::shared::NodeShared;
use crate::cluster::Gossiper;
use crate::coordinator::{ConsistencyLevel, Metrics, Outcome, Round};
use crate::error::{Error, Result};
use crate::net::{ResponseSlot, Transport};
use crate::proto::{KeyedCell, ReplicaRequest, Request, Response, keyed_cell_bytes};
use crate::ring::Ring;
use crate::storage::Cell;
use crate::types::NodeId;

/// A remote replica's response to come.
enum Reply {
    /// The request is sent.
    Sent(ResponseSlot),
    /// The request goes once the connection being opened is (first
    /// contact, or a stalled peer tried again): connecting and sending in
    /// one future, boxed as it is rare; then it is `Sent`.
    Connecting(Pin<Box<dyn Future<Output = Result<ResponseSlot>> + Send>>),
}

impl Reply {
    /// The replica did not answer by the deadline: it is stalled if the
    /// request went on its pooled connection. (A connect that had not
    /// ended by then stalls it itself, when it times out.)
    fn unanswered<T: Transport>(&self, peers: &PeerPool<T>) {
        if let Reply::Sent(slot) = self {
            peers.stalled(slot.connection());
        }
    }
}

impl Future for Reply {
    type Output = Result<Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reply = self.get_mut();
        loop {
            match reply {
                Reply::Sent(slot) => return Pin::new(slot).poll(cx),
                Reply::Connecting(sending) => match sending.as_mut().poll(cx) {
                    Poll::Ready(Ok(slot)) => *reply = Reply::Sent(slot),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

/// Responses awaited from remote replicas: a handful at most (one per
/// replica), so scanning them all on each wake-up is the cheapest set.
#[derive(Default)]
struct Replies {
    /// (index of the target, its response to come).
    slots: Vec<(usize, Reply)>,
}

impl Replies {
    /// Takes the first response that has arrived, with its target's index.
    fn poll_arrived(&mut self, cx: &mut Context<'_>) -> Option<(usize, Result<Response>)> {
        for i in 0..self.slots.len() {
            if let Poll::Ready(reply) = Pin::new(&mut self.slots[i].1).poll(cx) {
                let (index, _) = self.slots.swap_remove(i);
                return Some((index, reply));
            }
        }
        None
    }

    /// A response that has already arrived, without waiting.
    fn next_ready(&mut self) -> Option<(usize, Result<Response>)> {
        self.poll_arrived(&mut Context::from_waker(Waker::noop()))
    }

    /// The next response to arrive, with its target's index; `None` once
    /// none is awaited any more or `timer` fired first.
    async fn next(&mut self, mut timer: Pin<&mut Sleep>) -> Option<(usize, Result<Response>)> {
        std::future::poll_fn(|cx| {
            if let Some(arrived) = self.poll_arrived(cx) {
                return Poll::Ready(Some(arrived));
            }
            if self.slots.is_empty() || timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

/// A replica of a key as this node sees it.
#[derive(Clone)]
pub(super) struct Target {
    node: NodeId,
    addr: SocketAddr,
    up: bool,
}

fn unexpected_reply(node: &NodeId, response: Response) -> Error {
    Error::Remote {
        node: node.to_string(),
        message: format!("{response:?}"),
    }
}

/// Where one key of a batch stands.
enum Phase {
    /// Waiting for replies.
    Pending,
    /// Its level is met; the answer is made once the batch is settled.
    Met,
    /// Answered already: invalid, unavailable, or out of time.
    Answered(Response),
}

/// The jobs (indexes into a batch) one remote replica is asked about.
struct Group {
    target: Target,
    jobs: Vec<usize>,
    /// Estimated size of the message (writes only): a group is split before
    /// it outgrows a frame.
    bytes: usize,
}

/// Room kept in a frame for the headers around a batch.
const FRAME_MARGIN_BYTES: usize = 4096;

/// How long a batch may reuse the replica list an earlier batch computed,
/// when every key has the same replicas. Membership and liveness change in
/// seconds (gossip rounds, phi conviction); a list this young is as good as
/// a fresh one, and computing it was about a twentieth of a one-key
/// batch's work on three nodes.
const REPLICAS_REUSE_MS: u64 = 10;

/// The replica list when every key has the same replicas, and when it was
/// computed.
#[derive(Default)]
pub(super) struct ReplicasCache(Mutex<Option<(u64, Arc<[Target]>)>>);

impl ReplicasCache {
    fn fresh(&self, now_ms: u64) -> Option<Arc<[Target]>> {
        let cached = self.0.lock();
        let (at_ms, everyone) = cached.as_ref()?;
        (now_ms < at_ms + REPLICAS_REUSE_MS).then(|| everyone.clone())
    }

    fn keep(&self, now_ms: u64, everyone: Arc<[Target]>) {
        *self.0.lock() = Some((now_ms, everyone));
    }
}

/// Which ring a request's replicas come from: while a node joins or
/// leaves, reads move to the new ring a phase before writes leave the old
/// one ([`crate::cluster::NodeStatus`]).
#[derive(Clone, Copy)]
enum RingUse {
    Reads,
    /// The natural replicas; pending ones come on top.
    Writes,
}

/// The replicas of each key of a batch.
enum Replicas {
    /// Every key has these: the replication factor covers the ring.
    Same(Arc<[Target]>),
    /// Key by key.
    PerKey(Vec<Vec<Target>>),
}

impl Replicas {
    fn of(&self, job: usize) -> &[Target] {
        match self {
            Replicas::Same(targets) => targets,
            Replicas::PerKey(targets) => &targets[job],
        }
    }
}

/// The answer for a key a settled batch left pending, which `settle` and
/// `time_out` rule out.
fn left_pending() -> Response {
    Response::Error {
        message: "internal: the coordinator left a key unanswered".into(),
    }
}

fn not_reached(level: ConsistencyLevel, required: usize, received: usize) -> Response {
    Response::QuorumNotReached {
        level,
        required: required as u32,
        received: received as u32,
    }
}

impl<T: Transport> NodeShared<T> {
    /// The replicas of each key, from one look at membership: by the read
    /// ring for reads, by the ring for writes (see [`RingUse`]). When the
    /// replication factor covers the ring every key has the same replicas,
    /// and the keys share one list, reused by batches for
    /// [`REPLICAS_REUSE_MS`] while no node joins or leaves.
    fn replicas<'k>(&self, keys: impl Iterator<Item = &'k [u8]>, ring_use: RingUse) -> Replicas {
        let now = self.now_ms();
        // While a node moves, reads and writes use different rings.
        let moving = self.ring_moving.load(std::sync::atomic::Ordering::Acquire);
        if !moving && let Some(everyone) = self.replicas_cache.fresh(now) {
            return Replicas::Same(everyone);
        }
        let gossiper = self.gossiper.lock();
        let ring = match ring_use {
            RingUse::Reads => gossiper.read_ring(),
            RingUse::Writes => gossiper.ring(),
        };
        let replicas = self.replicas_by(&gossiper, &ring, keys, now);
        if let (false, Replicas::Same(everyone)) = (moving, &replicas) {
            self.replicas_cache.keep(now, everyone.clone());
        }
        replicas
    }

    /// The replicas of each key by `ring`, with addresses and liveness from
    /// `gossiper`.
    fn replicas_by<'k>(
        &self,
        gossiper: &Gossiper,
        ring: &Ring,
        keys: impl Iterator<Item = &'k [u8]>,
        now: u64,
    ) -> Replicas {
        let replication_factor = self.config.replication_factor as usize;
        let replicas_of = |key: &[u8]| {
            ring.replica_set_indexes(key, replication_factor)
                .filter_map(|index| self.target(gossiper, &ring.nodes()[index], now))
        };
        if replication_factor >= ring.nodes().len() {
            Replicas::Same(replicas_of(&[]).collect())
        } else {
            Replicas::PerKey(keys.map(|key| replicas_of(key).collect()).collect())
        }
    }

    /// Where `node` is and whether it is UP (this node always is); `None`
    /// for a node gossip does not know.
    fn target(&self, gossiper: &Gossiper, node: &NodeId, now: u64) -> Option<Target> {
        let (addr, up) = match *node == self.node_id {
            true => (self.native_addr, true),
            false => gossiper.reach(node, now)?,
        };
        Some(Target {
            node: node.clone(),
            addr,
            up,
        })
    }

    /// The replicas of each key for a write, and how many of them are
    /// pending, (UP, DOWN): while a node joins or leaves, a key's replicas
    /// by the ring data moves to ([`crate::cluster::Gossiper::pending_ring`])
    /// are written too, after its own. Both from one look at membership.
    fn write_replicas<'k>(
        &self,
        keys: impl Iterator<Item = &'k [u8]> + Clone,
    ) -> (Replicas, Vec<(usize, usize)>) {
        if !self.ring_moving.load(std::sync::atomic::Ordering::Acquire) {
            return (self.replicas(keys, RingUse::Writes), Vec::new());
        }
        let now = self.now_ms();
        let gossiper = self.gossiper.lock();
        let natural = self.replicas_by(&gossiper, &gossiper.ring(), keys.clone(), now);
        let Some(pending_ring) = gossiper.pending_ring() else {
            return (natural, Vec::new());
        };
        let replication_factor = self.config.replication_factor as usize;
        let mut counts = Vec::new();
        let per_key = keys
            .enumerate()
            .map(|(job, key)| {
                let mut targets = natural.of(job).to_vec();
                let (mut up, mut down) = (0, 0);
                for node in pending_ring.replica_set(key, replication_factor) {
                    if targets.iter().any(|t| t.node == *node) {
                        continue;
                    }
                    if let Some(target) = self.target(&gossiper, node, now) {
                        if target.up {
                            up += 1
                        } else {
                            down += 1
                        }
                        targets.push(target);
                    }
                }
                counts.push((up, down));
                targets
            })
            .collect();
        (Replicas::PerKey(per_key), counts)
    }

    /// Applies `writes` on the replica `node` at `addr` (or locally) and
    /// waits for its acknowledgement.
    pub(super) async fn replica_writes(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        writes: Vec<KeyedCell>,
    ) -> Result<()> {
        if *node == self.node_id {
            let writes = writes.into_iter().map(|w| (w.key, w.cell));
            return write_durably(&self.engine, writes.collect()).await;
        }
        let conn = self.peers.get(addr).await?;
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        let response = conn.request(Request::ReplicaWrites(writes), timeout).await;
        match response {
            Ok(Response::Done) => Ok(()),
            Ok(other) => Err(unexpected_reply(node, other)),
            Err(e) => {
                self.peers.failed(&conn, &e);
                Err(e)
            }
        }
    }

    /// Keeps a hint for each write a replica missed, if hinted handoff is
    /// on, in one durable write to the hint store; true if they are stored.
    async fn hint(&self, missed: &[(&NodeId, &[u8], &Cell)]) -> bool {
        if missed.is_empty() {
            return true;
        }
        let Some(hints) = &self.hints else {
            return false;
        };
        let count = missed.len() as u64;
        match hints.store(missed).await {
            Ok(true) => {
                Metrics::add(&self.metrics.hints_stored, count);
                true
            }
            Ok(false) => {
                Metrics::add(&self.metrics.hints_dropped, count);
                false
            }
            Err(e) => {
                tracing::error!(error = %e, hints = count, "cannot store hints");
                false
            }
        }
    }

    /// Sends `request` to a remote replica and adds the response it awaits
    /// (numbered `index`) to `replies`; false if it could not be sent by
    /// `deadline` (a stalled peer's write queue stays full) or the peer is
    /// stalled. A connection being opened is not waited for here: the
    /// request goes once it is, and its reply is awaited with the others.
    async fn ask(
        &self,
        target: &Target,
        index: usize,
        request: &ReplicaRequest<'_>,
        replies: &mut Replies,
        deadline: Instant,
    ) -> bool {
        let conn = match self.peers.reach(target.addr) {
            Reach::Open(conn) => conn,
            Reach::Connecting(connecting) => {
                let (addr, request) = (target.addr, request.to_request());
                let sending =
                    async move { connected(connecting, addr).await?.send(&request).await };
                replies
                    .slots
                    .push((index, Reply::Connecting(Box::pin(sending))));
                return true;
            }
            Reach::Stalled => {
                Metrics::add(&self.metrics.stalled_replica_requests, 1);
                tracing::debug!(replica = %target.node, "replica stalled: not asked");
                return false;
            }
        };
        let sent = match tokio::time::timeout_at(deadline, conn.send(request)).await {
            Ok(sent) => sent,
            Err(_) => Err(Error::Timeout {
                what: format!("sending to replica {}", target.node),
                after_ms: 0,
            }),
        };
        match sent {
            Ok(slot) => {
                replies.slots.push((index, Reply::Sent(slot)));
                true
            }
            Err(e) => {
                tracing::debug!(replica = %target.node, error = %e, "cannot reach replica");
                self.peers.failed(&conn, &e);
                false
            }
        }
    }

    /// A remote replica's reply that is not the one hoped for: logged. (A
    /// reply fails only when its connection closed, or could not be opened:
    /// the pool passes over both.)
    fn replica_failed(&self, target: &Target, reply: Result<Response>) {
        match reply {
            Ok(response) => {
                tracing::debug!(replica = %target.node, ?response, "unexpected replica answer");
            }
            Err(e) => {
                tracing::debug!(replica = %target.node, error = %e, "replica request failed");
            }
        }
    }

    /// A key with no replicas, or fewer than its level needs, is answered
    /// `QuorumNotReached` at once.
    fn check_reachable(
        &self,
        phase: &mut Phase,
        targets: &[Target],
        required: usize,
        level: ConsistencyLevel,
    ) {
        if matches!(phase, Phase::Pending) && (targets.is_empty() || required > targets.len()) {
            Metrics::add(&self.metrics.unavailable, 1);
            *phase = Phase::Answered(not_reached(level, required, 0));
        }
    }

    /// Moves every pending key whose round is over to `Met`, or answers it
    /// `QuorumNotReached`; true while some key still waits for replies.
    fn settle(&self, phases: &mut [Phase], rounds: &[impl Round], level: ConsistencyLevel) -> bool {
        let mut waiting = false;
        for (phase, round) in phases.iter_mut().zip(rounds) {
            if !matches!(phase, Phase::Pending) {
                continue;
            }
            match round.outcome() {
                Outcome::Done(()) => *phase = Phase::Met,
                Outcome::Failed { required, received } => {
                    Metrics::add(&self.metrics.unavailable, 1);
                    *phase = Phase::Answered(not_reached(level, required, received));
                }
                Outcome::Pending => waiting = true,
            }
        }
        waiting
    }

    /// At the deadline: every key still pending is answered with what it got.
    fn time_out(&self, phases: &mut [Phase], rounds: &[impl Round], level: ConsistencyLevel) {
        for (phase, round) in phases.iter_mut().zip(rounds) {
            if matches!(phase, Phase::Pending) {
                Metrics::add(&self.metrics.timeouts, 1);
                let (required, received) = round.counts();
                *phase = Phase::Answered(not_reached(level, required, received));
            }
        }
    }

    /// The most a batch message may carry, estimated: a frame less room for
    /// headers.
    pub(super) fn message_budget_bytes(&self) -> usize {
        self.config
            .frame_bytes_max
            .saturating_sub(FRAME_MARGIN_BYTES)
    }
}
