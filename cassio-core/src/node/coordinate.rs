//! The coordinator's IO: any node runs a client's read or write here. Writes
//! go to every replica (the local one applied directly, down ones hinted at
//! once); the answer comes when the level is met or cannot be. Reads ask every
//! live replica, answer with the newest vote once enough are in, and repair
//! stale replicas: before answering at TWO and above, after at ONE. Hints
//! for replicas that come back are replayed from here too.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::shared::NodeShared;
use crate::coordinator::{ConsistencyLevel, Metrics, Outcome, ReadRound, WriteRound};
use crate::error::{Error, Result};
use crate::net::{ResponseSlot, Transport};
use crate::proto::{Request, Response};
use crate::storage::{Cell, validate_key, validate_write};
use crate::types::NodeId;

/// Hints sent per replay batch.
const HINT_BATCH: usize = 128;

/// Responses awaited from remote replicas: a handful at most (one per
/// replica), so scanning them all on each wake-up is the cheapest set.
#[derive(Default)]
struct Replies {
    /// (index of the target, its response to come).
    slots: Vec<(usize, ResponseSlot)>,
}

impl Replies {
    /// The next response to arrive, with its target's index; `None` once
    /// none is awaited any more or `timer` fired first.
    async fn next(&mut self, mut timer: Pin<&mut Sleep>) -> Option<(usize, Result<Response>)> {
        std::future::poll_fn(|cx| {
            for i in 0..self.slots.len() {
                if let Poll::Ready(reply) = Pin::new(&mut self.slots[i].1).poll(cx) {
                    let (index, _) = self.slots.swap_remove(i);
                    return Poll::Ready(Some((index, reply)));
                }
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
struct Target {
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

fn not_reached(level: ConsistencyLevel, required: usize, received: usize) -> Response {
    Response::QuorumNotReached {
        level,
        required: required as u32,
        received: received as u32,
    }
}

impl<T: Transport> NodeShared<T> {
    fn targets(&self, key: &[u8]) -> Vec<Target> {
        let gossiper = self.gossiper.lock();
        let ring = gossiper.ring();
        let mut now = None;
        ring.replica_set_indexes(key, self.config.replication_factor as usize)
            .filter_map(|index| {
                let node = &ring.nodes()[index];
                if *node == self.node_id {
                    return Some(Target {
                        node: node.clone(),
                        addr: self.native_addr,
                        up: true,
                    });
                }
                let now = *now.get_or_insert_with(|| self.now_ms());
                let (addr, up) = gossiper.reach(node, now)?;
                Some(Target {
                    node: node.clone(),
                    addr,
                    up,
                })
            })
            .collect()
    }

    /// Applies `cell` on the replica at `addr` (or locally).
    async fn replica_write(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        key: &[u8],
        cell: &Cell,
    ) -> Result<()> {
        if *node == self.node_id {
            return self.engine.write(key, cell.clone());
        }
        let request = Request::ReplicaWrite {
            key: key.to_vec(),
            cell: cell.clone(),
        };
        match self
            .peer_call(addr, request, self.config.write_timeout_ms)
            .await?
        {
            Response::Done => Ok(()),
            other => Err(unexpected_reply(node, other)),
        }
    }

    /// One request to the peer at `addr` on its pooled connection; a failed
    /// connection is dropped from the pool so the next call reconnects.
    async fn peer_call(
        &self,
        addr: SocketAddr,
        request: Request,
        timeout_ms: u64,
    ) -> Result<Response> {
        let conn = self.peer(addr).await?;
        let response = conn
            .request(request, Duration::from_millis(timeout_ms))
            .await;
        if response.is_err() {
            self.forget_peer(addr);
        }
        response
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

    /// Sends `request` to the remote replica `targets[index]` and adds the
    /// response it awaits to `replies`; false if it could not be sent.
    async fn ask(
        &self,
        targets: &[Target],
        index: usize,
        request: &Request,
        replies: &mut Replies,
    ) -> bool {
        let target = &targets[index];
        let sent = match self.peer(target.addr).await {
            Ok(conn) => conn.send(request).await,
            Err(e) => Err(e),
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

    /// True if a replica acknowledged a write.
    fn write_acked(&self, target: &Target, reply: Result<Response>) -> bool {
        match reply {
            Ok(Response::Done) => true,
            other => {
                self.replica_failed(target, other);
                false
            }
        }
    }

    /// Replicas asked for a write that did not answer by the deadline get a
    /// hint; their connection is dropped from the pool, as it may be stuck.
    fn write_unanswered(&self, targets: &[Target], replies: &Replies, key: &[u8], cell: &Cell) {
        for (index, _) in &replies.slots {
            let target = &targets[*index];
            tracing::debug!(replica = %target.node, "replica did not answer the write in time");
            self.forget_peer(target.addr);
            self.hint(&target.node, key, cell);
        }
    }

    pub(crate) async fn coordinate_write(
        self: &Arc<Self>,
        key: Vec<u8>,
        cell: Cell,
        level: ConsistencyLevel,
    ) -> Response {
        Metrics::add(&self.metrics.writes, 1);
        if let Err(e) = validate_write(&key, &cell, self.config.storage.value_bytes_max) {
            Metrics::add(&self.metrics.invalid_requests, 1);
            return Response::Invalid {
                message: e.to_string(),
            };
        }
        let targets = self.targets(&key);
        let mut round = WriteRound::new(level, targets.len());
        if targets.is_empty() || round.required() > targets.len() {
            Metrics::add(&self.metrics.unavailable, 1);
            return not_reached(level, round.required(), 0);
        }
        let timestamp = cell.timestamp;
        let mut replies = Replies::default();
        if targets.iter().any(|t| t.node == self.node_id) {
            match self.engine.write(&key, cell.clone()) {
                Ok(()) => round.acked(),
                Err(e) => {
                    tracing::error!(error = %e, "local replica write failed");
                    round.missed(false);
                }
            }
        }
        // Built once, sent to every remote replica.
        let request = Request::ReplicaWrite { key, cell };
        let Request::ReplicaWrite { key, cell } = &request else {
            unreachable!("just built")
        };
        for (index, target) in targets.iter().enumerate() {
            if target.node == self.node_id {
                continue;
            }
            if !(target.up && self.ask(&targets, index, &request, &mut replies).await) {
                round.missed(self.hint(&target.node, key, cell));
            }
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.write_timeout_ms);
        let mut timer = pin!(tokio::time::sleep_until(deadline));
        let answer = loop {
            match round.outcome() {
                Outcome::Done(()) => break Response::Written { timestamp },
                Outcome::Failed { required, received } => {
                    Metrics::add(&self.metrics.unavailable, 1);
                    break not_reached(level, required, received);
                }
                Outcome::Pending => {}
            }
            match replies.next(timer.as_mut()).await {
                Some((index, reply)) => match self.write_acked(&targets[index], reply) {
                    true => round.acked(),
                    false => round.missed(self.hint(&targets[index].node, key, cell)),
                },
                None => {
                    Metrics::add(&self.metrics.timeouts, 1);
                    let (required, received) = round.counts();
                    break not_reached(level, required, received);
                }
            }
        };
        if replies.slots.is_empty() {
            return answer;
        }
        if timer.is_elapsed() {
            self.write_unanswered(&targets, &replies, key, cell);
            return answer;
        }
        // Replicas not heard from yet still get the write, or a hint.
        let shared = self.clone();
        tokio::spawn(async move {
            let Request::ReplicaWrite { key, cell } = &request else {
                unreachable!("built above")
            };
            let mut timer = pin!(tokio::time::sleep_until(deadline));
            while let Some((index, reply)) = replies.next(timer.as_mut()).await {
                if !shared.write_acked(&targets[index], reply) {
                    shared.hint(&targets[index].node, key, cell);
                }
            }
            shared.write_unanswered(&targets, &replies, key, cell);
        });
        answer
    }

    pub(crate) async fn coordinate_read(
        self: &Arc<Self>,
        key: Vec<u8>,
        level: ConsistencyLevel,
    ) -> Response {
        Metrics::add(&self.metrics.reads, 1);
        if level == ConsistencyLevel::Any {
            Metrics::add(&self.metrics.invalid_requests, 1);
            return Response::Invalid {
                message: "consistency level ANY is for writes only".into(),
            };
        }
        if let Err(e) = validate_key(&key) {
            Metrics::add(&self.metrics.invalid_requests, 1);
            return Response::Invalid {
                message: e.to_string(),
            };
        }
        let targets = self.targets(&key);
        let mut round = ReadRound::new(level, targets.len());
        if targets.is_empty() || round.required() > targets.len() {
            Metrics::add(&self.metrics.unavailable, 1);
            return not_reached(level, round.required(), 0);
        }
        let mut replies = Replies::default();
        let request = Request::ReplicaRead { key };
        let Request::ReplicaRead { key } = &request else {
            unreachable!("just built")
        };
        for (index, target) in targets.iter().enumerate() {
            if target.node == self.node_id {
                match self.engine.get_cell(key) {
                    Ok(cell) => round.reply(target.node.clone(), cell),
                    Err(e) => {
                        tracing::error!(error = %e, "local replica read failed");
                        round.missed();
                    }
                }
            } else if !(target.up && self.ask(&targets, index, &request, &mut replies).await) {
                round.missed();
            }
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.read_timeout_ms);
        let mut timer = pin!(tokio::time::sleep_until(deadline));
        loop {
            match round.outcome() {
                Outcome::Done(()) => break,
                Outcome::Failed { required, received } => {
                    Metrics::add(&self.metrics.unavailable, 1);
                    return not_reached(level, required, received);
                }
                Outcome::Pending => {}
            }
            match replies.next(timer.as_mut()).await {
                Some(vote) => self.count_vote(&mut round, &targets, vote),
                None => {
                    Metrics::add(&self.metrics.timeouts, 1);
                    return not_reached(level, round.required(), round.votes());
                }
            }
        }
        if (level != ConsistencyLevel::One || replies.slots.is_empty())
            && round.stale().next().is_some()
        {
            // Before answering: the stale replicas that voted get the winner.
            Box::pin(self.repair(key, &round, &targets, &mut Vec::new())).await;
        }
        let winner = if replies.slots.is_empty() {
            round.into_newest()
        } else {
            // After answering: late votes are compared too, and repaired.
            let winner = round.newest().cloned();
            let shared = self.clone();
            tokio::spawn(async move {
                let mut timer = pin!(tokio::time::sleep_until(deadline));
                while let Some(vote) = replies.next(timer.as_mut()).await {
                    shared.count_vote(&mut round, &targets, vote);
                }
                let Request::ReplicaRead { key } = &request else {
                    unreachable!("built above")
                };
                shared.repair(key, &round, &targets, &mut Vec::new()).await;
            });
            winner
        };
        let now_ms = (self.clock)();
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
    }

    /// Counts a remote replica's answer to a read as its vote, or as missed.
    fn count_vote(
        &self,
        round: &mut ReadRound,
        targets: &[Target],
        (index, reply): (usize, Result<Response>),
    ) {
        match reply {
            Ok(Response::ReplicaCell(cell)) => round.reply(targets[index].node.clone(), cell),
            other => {
                self.replica_failed(&targets[index], other);
                round.missed();
            }
        }
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
            match self.replica_write(node, target.addr, key, newest).await {
                Ok(()) => {
                    Metrics::add(&self.metrics.read_repairs, 1);
                    repaired.push(node.clone());
                }
                Err(e) => tracing::debug!(replica = %node, error = %e, "read repair failed"),
            }
        }
    }

    /// Replays hints to every target gossip sees UP (one replay per target
    /// at a time). Called every gossip tick.
    pub(crate) fn replay_hints(self: &Arc<Self>) {
        let Some(hints) = &self.hints else { return };
        let now = self.now_ms();
        for target in hints.targets() {
            let addr = {
                let gossiper = self.gossiper.lock();
                if !gossiper.is_up(&target, now) {
                    continue;
                }
                gossiper
                    .members(now)
                    .into_iter()
                    .find(|m| m.node == target)
                    .map(|m| m.native_addr)
            };
            let Some(addr) = addr else { continue };
            if !self.replaying.lock().insert(target.clone()) {
                continue;
            }
            let shared = self.clone();
            tokio::spawn(async move {
                if let Err(e) = shared.replay_to(&target, addr).await {
                    tracing::debug!(target_node = %target, error = %e, "hint replay paused");
                }
                shared.replaying.lock().remove(&target);
            });
        }
    }

    async fn replay_to(&self, target: &NodeId, addr: SocketAddr) -> Result<()> {
        let hints = self.hints.as_ref().expect("replay only runs with hints");
        loop {
            let (batch, expired) = hints.next_batch(target, HINT_BATCH)?;
            Metrics::add(&self.metrics.hints_expired, expired);
            if batch.is_empty() {
                return Ok(());
            }
            for hint in &batch {
                self.replica_write(target, addr, &hint.key, &hint.cell)
                    .await?;
                hints.delivered(hint)?;
                self.metrics.hints_replayed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
