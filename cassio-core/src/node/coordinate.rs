//! The coordinator's IO: any node runs clients' reads and writes here, a
//! batch at a time (one key, or every GET or SET of a pipeline). Writes go
//! to every replica (the local one applied directly, down ones hinted at
//! once); each key's answer comes when its level is met or cannot be. Reads
//! ask every live replica, answer with the newest vote once enough are in,
//! and repair stale replicas: before answering at TWO and above, after at
//! ONE. A batch costs one message per remote replica, whatever its size.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::join_all;
use parking_lot::Mutex;
use serde_bytes::Bytes;
use tokio::time::{Instant, Sleep};

use super::shared::NodeShared;
use crate::coordinator::{ConsistencyLevel, Metrics, Outcome, ReadRound, Round, WriteRound};
use crate::error::{Error, Result};
use crate::net::{ResponseSlot, Transport};
use crate::proto::{KeyedCell, KeyedCellRef, ReplicaRequest, Request, Response};
use crate::storage::{Cell, CellValue, validate_key, validate_write};
use crate::types::NodeId;

/// Responses awaited from remote replicas: a handful at most (one per
/// replica), so scanning them all on each wake-up is the cheapest set.
#[derive(Default)]
struct Replies {
    /// (index of the target, its response to come).
    slots: Vec<(usize, ResponseSlot)>,
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

/// A generous estimate of one (key, cell)'s encoded size in a message.
pub(super) fn keyed_cell_bytes(key: &[u8], cell: &Cell) -> usize {
    let value = match &cell.value {
        CellValue::Value(v) => v.len(),
        CellValue::Tombstone => 0,
    };
    key.len() + value + 64
}

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

/// A batch of writes being coordinated: each write's round, and the
/// replicas asked.
struct WriteBatch {
    writes: Vec<(Vec<u8>, Cell)>,
    rounds: Vec<WriteRound>,
    groups: Vec<Group>,
}

/// A batch of reads being coordinated: each key's round and replicas, and
/// the replicas asked.
struct ReadBatch {
    rounds: Vec<ReadRound>,
    groups: Vec<Group>,
    replicas: Replicas,
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

/// The keys of a read batch whose level was met and whose votes disagree:
/// the ones read repair writes.
fn stale_jobs<'b>(batch: &'b ReadBatch, met: &'b [bool]) -> impl Iterator<Item = usize> + 'b {
    (0..batch.rounds.len()).filter(|&job| met[job] && batch.rounds[job].stale().next().is_some())
}

impl<T: Transport> NodeShared<T> {
    /// The replicas of each key, from one look at membership. When the
    /// replication factor covers the ring every key has the same replicas,
    /// and the keys share one list, reused by batches for
    /// [`REPLICAS_REUSE_MS`].
    fn replicas<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Replicas {
        let now = self.now_ms();
        if let Some(everyone) = self.replicas_cache.fresh(now) {
            return Replicas::Same(everyone);
        }
        let gossiper = self.gossiper.lock();
        let ring = gossiper.ring();
        let replication_factor = self.config.replication_factor as usize;
        let replicas_of = |key: &[u8]| {
            ring.replica_set_indexes(key, replication_factor)
                .filter_map(|index| {
                    let node = &ring.nodes()[index];
                    if *node == self.node_id {
                        return Some(Target {
                            node: node.clone(),
                            addr: self.native_addr,
                            up: true,
                        });
                    }
                    let (addr, up) = gossiper.reach(node, now)?;
                    Some(Target {
                        node: node.clone(),
                        addr,
                        up,
                    })
                })
        };
        if replication_factor >= ring.nodes().len() {
            let everyone: Arc<[Target]> = replicas_of(&[]).collect();
            self.replicas_cache.keep(now, everyone.clone());
            Replicas::Same(everyone)
        } else {
            Replicas::PerKey(keys.map(|key| replicas_of(key).collect()).collect())
        }
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
            return writes
                .into_iter()
                .try_for_each(|w| self.engine.write(&w.key, w.cell));
        }
        let conn = self.peer(addr).await?;
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        let response = conn.request(Request::ReplicaWrites(writes), timeout).await;
        match response {
            Ok(Response::Done) => Ok(()),
            Ok(other) => Err(unexpected_reply(node, other)),
            Err(e) => {
                self.forget_peer(addr);
                Err(e)
            }
        }
    }

    /// Keeps a hint for `node`, if hinted handoff is on; true if stored.
    fn hint(&self, node: &NodeId, key: &[u8], cell: &Cell) -> bool {
        let Some(hints) = &self.hints else {
            return false;
        };
        match hints.store(node, key, cell) {
            Ok(true) => {
                Metrics::add(&self.metrics.hints_stored, 1);
                true
            }
            Ok(false) => {
                Metrics::add(&self.metrics.hints_dropped, 1);
                false
            }
            Err(e) => {
                tracing::error!(target_node = %node, error = %e, "cannot store hint");
                false
            }
        }
    }

    /// Sends `request` to a remote replica and adds the response it awaits
    /// (numbered `index`) to `replies`; false if it could not be sent by
    /// `deadline` (a stalled peer's write queue stays full).
    async fn ask(
        &self,
        target: &Target,
        index: usize,
        request: &ReplicaRequest<'_>,
        replies: &mut Replies,
        deadline: Instant,
    ) -> bool {
        let send = async {
            match self.peer(target.addr).await {
                Ok(conn) => conn.send(request).await,
                Err(e) => Err(e),
            }
        };
        let sent = match tokio::time::timeout_at(deadline, send).await {
            Ok(sent) => sent,
            Err(_) => Err(Error::Timeout {
                what: format!("sending to replica {}", target.node),
                after_ms: 0,
            }),
        };
        match sent {
            Ok(slot) => {
                replies.slots.push((index, slot));
                true
            }
            Err(e) => {
                tracing::debug!(replica = %target.node, error = %e, "cannot reach replica");
                self.forget_peer(target.addr);
                false
            }
        }
    }

    /// A remote replica's reply that is not the one hoped for: logged, and
    /// a failed connection is dropped from the pool.
    fn replica_failed(&self, target: &Target, reply: Result<Response>) {
        match reply {
            Ok(response) => {
                tracing::debug!(replica = %target.node, ?response, "unexpected replica answer");
            }
            Err(e) => {
                tracing::debug!(replica = %target.node, error = %e, "replica request failed");
                self.forget_peer(target.addr);
            }
        }
    }

    /// Counts a replica's answer to a batch of writes; the writes it did not
    /// acknowledge are hinted.
    fn writes_answered(&self, batch: &mut WriteBatch, group: usize, reply: Result<Response>) {
        let acked = match reply {
            Ok(Response::Done) => true,
            other => {
                self.replica_failed(&batch.groups[group].target, other);
                false
            }
        };
        let Group { target, jobs, .. } = &batch.groups[group];
        for &job in jobs {
            let (key, cell) = &batch.writes[job];
            match acked {
                true => batch.rounds[job].acked(),
                false => batch.rounds[job].missed(self.hint(&target.node, key, cell)),
            }
        }
    }

    /// Replicas that did not answer a batch of writes by the deadline get
    /// hints; their connection is dropped from the pool, as it may be stuck.
    fn writes_unanswered(&self, batch: &WriteBatch, replies: &Replies) {
        for (group, _) in &replies.slots {
            let Group { target, jobs, .. } = &batch.groups[*group];
            tracing::debug!(replica = %target.node, "replica did not answer writes in time");
            self.forget_peer(target.addr);
            for &job in jobs {
                let (key, cell) = &batch.writes[job];
                self.hint(&target.node, key, cell);
            }
        }
    }

    pub(crate) async fn coordinate_write(
        self: &Arc<Self>,
        key: Vec<u8>,
        cell: Cell,
        level: ConsistencyLevel,
    ) -> Response {
        let mut answers = self.coordinate_writes(vec![(key, cell)], level).await;
        answers.pop().unwrap_or_else(|| Response::Error {
            message: "internal: a write got no answer".into(),
        })
    }

    /// Writes every (key, cell) at `level`; one answer per write, in order.
    pub(crate) async fn coordinate_writes(
        self: &Arc<Self>,
        writes: Vec<(Vec<u8>, Cell)>,
        level: ConsistencyLevel,
    ) -> Vec<Response> {
        let mut phases: Vec<Phase> = writes.iter().map(|_| Phase::Pending).collect();
        let mut rounds = Vec::with_capacity(writes.len());
        let mut groups: Vec<Group> = Vec::new();
        Metrics::add(&self.metrics.writes, writes.len() as u64);
        let replicas = self.replicas(writes.iter().map(|(key, _)| &key[..]));
        for (job, (key, cell)) in writes.iter().enumerate() {
            let targets = match validate_write(key, cell, self.config.storage.value_bytes_max) {
                Ok(()) => replicas.of(job),
                Err(e) => {
                    Metrics::add(&self.metrics.invalid_requests, 1);
                    phases[job] = Phase::Answered(Response::Invalid {
                        message: e.to_string(),
                    });
                    &[]
                }
            };
            let mut round = WriteRound::new(level, targets.len());
            self.check_reachable(&mut phases[job], targets, round.required(), level);
            if !matches!(phases[job], Phase::Pending) {
                rounds.push(round);
                continue;
            }
            // This node's own replica is written below, with the batch's
            // other local writes.
            for target in targets.iter().filter(|t| t.node != self.node_id) {
                if !target.up {
                    round.missed(self.hint(&target.node, key, cell));
                    continue;
                }
                let bytes = keyed_cell_bytes(key, cell);
                let budget = self.message_budget_bytes();
                let room = groups
                    .iter_mut()
                    .find(|g| g.target.node == target.node && g.bytes + bytes <= budget);
                match room {
                    Some(group) => {
                        group.jobs.push(job);
                        group.bytes += bytes;
                    }
                    None => groups.push(Group {
                        target: target.clone(),
                        jobs: vec![job],
                        bytes,
                    }),
                }
            }
            rounds.push(round);
        }
        // This node's own replicas, under one acquisition of the write lock.
        let local_jobs = || {
            (0..writes.len()).filter(|&job| {
                matches!(phases[job], Phase::Pending)
                    && replicas.of(job).iter().any(|t| t.node == self.node_id)
            })
        };
        let local = local_jobs().map(|job| (&writes[job].0[..], writes[job].1.clone()));
        let written = self.engine.write_batch(local.collect());
        if let Err(e) = &written {
            tracing::error!(error = %e, "local replica write failed");
        }
        for job in local_jobs() {
            match written {
                Ok(()) => rounds[job].acked(),
                Err(_) => rounds[job].missed(false),
            }
        }
        let mut batch = WriteBatch {
            writes,
            rounds,
            groups,
        };
        let deadline = Instant::now() + Duration::from_millis(self.config.write_timeout_ms);
        let mut replies = Replies::default();
        for (index, group) in batch.groups.iter().enumerate() {
            let request = ReplicaRequest::Writes(
                group
                    .jobs
                    .iter()
                    .map(|&job| KeyedCellRef {
                        key: &batch.writes[job].0,
                        cell: &batch.writes[job].1,
                    })
                    .collect(),
            );
            if !self
                .ask(&group.target, index, &request, &mut replies, deadline)
                .await
            {
                for &job in &group.jobs {
                    let (key, cell) = &batch.writes[job];
                    let hinted = self.hint(&group.target.node, key, cell);
                    batch.rounds[job].missed(hinted);
                }
            }
        }
        let mut timer = pin!(tokio::time::sleep_until(deadline));
        while self.settle(&mut phases, &batch.rounds, level) {
            match replies.next(timer.as_mut()).await {
                Some((group, reply)) => self.writes_answered(&mut batch, group, reply),
                None => self.time_out(&mut phases, &batch.rounds, level),
            }
        }
        let answers: Vec<Response> = phases
            .into_iter()
            .zip(&batch.writes)
            .map(|(phase, (_, cell))| match phase {
                Phase::Answered(answer) => answer,
                Phase::Met => Response::Written {
                    timestamp: cell.timestamp,
                },
                Phase::Pending => left_pending(),
            })
            .collect();
        // Acknowledgements that already arrived are counted now: often the
        // last replica answered too, and no background work is needed.
        while let Some((group, reply)) = replies.next_ready() {
            self.writes_answered(&mut batch, group, reply);
        }
        if !replies.slots.is_empty() {
            if timer.is_elapsed() {
                self.writes_unanswered(&batch, &replies);
            } else {
                // Replicas not heard from yet still get the writes, or hints.
                let shared = self.clone();
                self.background.run(async move {
                    let mut timer = pin!(tokio::time::sleep_until(deadline));
                    while let Some((group, reply)) = replies.next(timer.as_mut()).await {
                        shared.writes_answered(&mut batch, group, reply);
                    }
                    shared.writes_unanswered(&batch, &replies);
                });
            }
        }
        answers
    }

    pub(crate) async fn coordinate_read(
        self: &Arc<Self>,
        key: Vec<u8>,
        level: ConsistencyLevel,
    ) -> Response {
        let mut answers = self.coordinate_reads(&[&key[..]], level).await;
        answers.pop().unwrap_or_else(|| Response::Error {
            message: "internal: a read got no answer".into(),
        })
    }

    /// Reads every key at `level`; one answer per key, in order.
    pub(crate) async fn coordinate_reads(
        self: &Arc<Self>,
        keys: &[&[u8]],
        level: ConsistencyLevel,
    ) -> Vec<Response> {
        let mut phases: Vec<Phase> = keys.iter().map(|_| Phase::Pending).collect();
        let mut batch = ReadBatch {
            rounds: Vec::with_capacity(keys.len()),
            groups: Vec::new(),
            replicas: self.replicas(keys.iter().copied()),
        };
        Metrics::add(&self.metrics.reads, keys.len() as u64);
        // This node's own votes come from one storage snapshot.
        let snapshot = self.engine.snapshot();
        for (job, key) in keys.iter().enumerate() {
            let invalid = if level == ConsistencyLevel::Any {
                Some("consistency level ANY is for writes only".to_string())
            } else {
                validate_key(key).err().map(|e| e.to_string())
            };
            let targets = match invalid {
                Some(message) => {
                    Metrics::add(&self.metrics.invalid_requests, 1);
                    phases[job] = Phase::Answered(Response::Invalid { message });
                    &[]
                }
                None => batch.replicas.of(job),
            };
            let mut round = ReadRound::new(level, targets.len());
            self.check_reachable(&mut phases[job], targets, round.required(), level);
            if matches!(phases[job], Phase::Pending) {
                for target in targets.iter() {
                    if target.node == self.node_id {
                        match snapshot.cell(key) {
                            Ok(cell) => round.reply(self.node_id.clone(), cell),
                            Err(e) => {
                                tracing::error!(error = %e, "local replica read failed");
                                round.missed();
                            }
                        }
                    } else if !target.up {
                        round.missed();
                    } else {
                        match batch
                            .groups
                            .iter_mut()
                            .find(|g| g.target.node == target.node)
                        {
                            Some(group) => group.jobs.push(job),
                            None => batch.groups.push(Group {
                                target: target.clone(),
                                jobs: vec![job],
                                bytes: 0,
                            }),
                        }
                    }
                }
            }
            batch.rounds.push(round);
        }
        drop(snapshot);
        let deadline = Instant::now() + Duration::from_millis(self.config.read_timeout_ms);
        let mut replies = Replies::default();
        for (index, group) in batch.groups.iter().enumerate() {
            let request = ReplicaRequest::Reads(
                group
                    .jobs
                    .iter()
                    .map(|&job| Bytes::new(keys[job]))
                    .collect(),
            );
            if !self
                .ask(&group.target, index, &request, &mut replies, deadline)
                .await
            {
                for &job in &group.jobs {
                    batch.rounds[job].missed();
                }
            }
        }
        let mut timer = pin!(tokio::time::sleep_until(deadline));
        while self.settle(&mut phases, &batch.rounds, level) {
            match replies.next(timer.as_mut()).await {
                Some((group, reply)) => {
                    if let Some(rest) = self.votes_answered(&mut batch, group, reply) {
                        self.ask_again(&mut batch, rest, keys, &mut replies, deadline)
                            .await;
                    }
                }
                None => self.time_out(&mut phases, &batch.rounds, level),
            }
        }
        let met: Vec<bool> = phases.iter().map(|p| matches!(p, Phase::Met)).collect();
        // Votes that already arrived are counted now: often the last
        // replica answered too, and no background work is needed.
        while let Some((group, reply)) = replies.next_ready() {
            if let Some(rest) = self.votes_answered(&mut batch, group, reply) {
                // Late anyway: not asked again.
                rest.jobs.iter().for_each(|&job| batch.rounds[job].missed());
            }
        }
        let late_votes = !replies.slots.is_empty();
        if (level != ConsistencyLevel::One || !late_votes)
            && stale_jobs(&batch, &met).next().is_some()
        {
            // Before answering: the stale replicas that voted get the winner.
            Box::pin(self.repair_all(keys, &batch, &met)).await;
        }
        let now_ms = (self.clock)();
        let winners: Vec<Option<Cell>> = if late_votes {
            batch.rounds.iter().map(|r| r.newest().cloned()).collect()
        } else {
            std::mem::take(&mut batch.rounds)
                .into_iter()
                .map(ReadRound::into_newest)
                .collect()
        };
        let answers: Vec<Response> = phases
            .into_iter()
            .zip(winners)
            .map(|(phase, winner)| {
                match phase {
                    Phase::Answered(answer) => return answer,
                    Phase::Pending => return left_pending(),
                    Phase::Met => {}
                }
                let timestamp = winner.as_ref().map(|c| c.timestamp);
                match winner.and_then(|c| c.into_live_value(now_ms)) {
                    Some(value) => Response::Value {
                        value: Some(value),
                        timestamp,
                    },
                    None => Response::Value {
                        value: None,
                        timestamp: None,
                    },
                }
            })
            .collect();
        if late_votes {
            // After answering: late votes are compared too, and repaired.
            let shared = self.clone();
            let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
            self.background.run(async move {
                let mut timer = pin!(tokio::time::sleep_until(deadline));
                while let Some((group, reply)) = replies.next(timer.as_mut()).await {
                    if let Some(rest) = shared.votes_answered(&mut batch, group, reply) {
                        rest.jobs.iter().for_each(|&job| batch.rounds[job].missed());
                    }
                }
                let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
                shared.repair_all(&keys, &batch, &met).await;
            });
        }
        answers
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

    /// Counts a replica's answer to a batch of reads: one vote per key, or
    /// all missed. A replica answers as many keys as fit in a frame; the
    /// keys it left out come back as a group to ask again.
    fn votes_answered(
        &self,
        batch: &mut ReadBatch,
        group: usize,
        reply: Result<Response>,
    ) -> Option<Group> {
        let Group { target, jobs, .. } = &batch.groups[group];
        match reply {
            Ok(Response::ReplicaCells(cells)) if !cells.is_empty() && cells.len() <= jobs.len() => {
                let answered = cells.len();
                for (&job, cell) in jobs.iter().zip(cells) {
                    batch.rounds[job].reply(target.node.clone(), cell);
                }
                (answered < jobs.len()).then(|| Group {
                    target: target.clone(),
                    jobs: jobs[answered..].to_vec(),
                    bytes: 0,
                })
            }
            other => {
                self.replica_failed(target, other);
                for &job in jobs {
                    batch.rounds[job].missed();
                }
                None
            }
        }
    }

    /// Asks a replica again for the keys it left out of an answer; if that
    /// cannot be sent, they count as missed.
    async fn ask_again(
        &self,
        batch: &mut ReadBatch,
        rest: Group,
        keys: &[&[u8]],
        replies: &mut Replies,
        deadline: Instant,
    ) {
        let request =
            ReplicaRequest::Reads(rest.jobs.iter().map(|&j| Bytes::new(keys[j])).collect());
        let index = batch.groups.len();
        let asked = self
            .ask(&rest.target, index, &request, replies, deadline)
            .await;
        if !asked {
            for &job in &rest.jobs {
                batch.rounds[job].missed();
            }
        }
        batch.groups.push(rest);
    }

    /// The most a batch message may carry, estimated: a frame less room for
    /// headers.
    pub(super) fn message_budget_bytes(&self) -> usize {
        self.config
            .frame_bytes_max
            .saturating_sub(FRAME_MARGIN_BYTES)
    }

    /// Read repair of every key whose level was met and whose votes
    /// disagree, all at once (a slow replica delays the batch by one write
    /// timeout at most, not one per key).
    async fn repair_all(&self, keys: &[&[u8]], batch: &ReadBatch, met: &[bool]) {
        let repairs = stale_jobs(batch, met).map(|job| async move {
            let (round, targets) = (&batch.rounds[job], batch.replicas.of(job));
            self.repair(keys[job], round, targets, &mut Vec::new())
                .await
        });
        join_all(repairs).await;
    }

    /// Writes the newest vote to every replica whose vote was older.
    async fn repair(
        &self,
        key: &[u8],
        round: &ReadRound,
        targets: &[Target],
        repaired: &mut Vec<NodeId>,
    ) {
        let Some(newest) = round.newest() else { return };
        for node in round.stale() {
            if repaired.contains(node) {
                continue;
            }
            let Some(target) = targets.iter().find(|t| t.node == *node) else {
                continue;
            };
            let write = KeyedCell {
                key: key.to_vec(),
                cell: newest.clone(),
            };
            match self.replica_writes(node, target.addr, vec![write]).await {
                Ok(()) => {
                    Metrics::add(&self.metrics.read_repairs, 1);
                    repaired.push(node.clone());
                }
                Err(e) => tracing::debug!(replica = %node, error = %e, "read repair failed"),
            }
        }
    }
}
