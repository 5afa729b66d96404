//! The coordinator's IO: any node runs a client's read or write here. Writes
//! go to every replica (the local one applied directly, down ones hinted at
//! once); the answer comes when the level is met or cannot be. Reads ask every
//! live replica, answer with the newest vote once enough are in, and repair
//! stale replicas: before answering at TWO and above, after at ONE. Hints
//! for replicas that come back are replayed from here too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::shared::NodeShared;
use crate::coordinator::{ConsistencyLevel, Metrics, Outcome, ReadRound, WriteRound};
use crate::error::{Error, Result};
use crate::net::{ResponseSlot, Transport};
use crate::proto::{Request, Response};
use crate::storage::{Cell, validate_key, validate_write};
use crate::types::NodeId;

/// Hints sent per replay batch.
const HINT_BATCH: usize = 128;

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
        ring.replica_set(key, self.config.replication_factor as usize)
            .into_iter()
            .filter_map(|node| {
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

    /// Sends `request` to a remote replica; the response (numbered `index`)
    /// arrives on the returned future. `None` if it could not be sent.
    async fn ask(
        &self,
        target: &Target,
        index: usize,
        request: Request,
    ) -> Option<impl Future<Output = (usize, Result<Response>)> + Unpin + use<T>> {
        let sent = match self.peer(target.addr).await {
            Ok(conn) => conn.send(request).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(slot) => Some(ResponseSlot::map(slot, move |reply| (index, reply))),
            Err(e) => {
                tracing::debug!(replica = %target.node, error = %e, "cannot reach replica");
                self.forget_peer(target.addr);
                None
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
    fn write_unanswered(&self, targets: &[Target], answered: &[bool], key: &[u8], cell: &Cell) {
        for (target, _) in targets.iter().zip(answered).filter(|(_, a)| !**a) {
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
        // Remote replicas are asked without waiting; `answered[i]` turns
        // false for each one asked, and true again once it answered.
        let mut answered = vec![true; targets.len()];
        let mut asks = FuturesUnordered::new();
        for (index, target) in targets.iter().enumerate() {
            if target.node == self.node_id {
                match self.engine.write(&key, cell.clone()) {
                    Ok(()) => round.acked(),
                    Err(e) => {
                        tracing::error!(error = %e, "local replica write failed");
                        round.missed(false);
                    }
                }
                continue;
            }
            let request = Request::ReplicaWrite {
                key: key.clone(),
                cell: cell.clone(),
            };
            let ask = match target.up {
                true => self.ask(target, index, request).await,
                false => None,
            };
            match ask {
                Some(ask) => {
                    asks.push(ask);
                    answered[index] = false;
                }
                None => round.missed(self.hint(&target.node, &key, &cell)),
            }
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.write_timeout_ms);
        let answer = loop {
            match round.outcome() {
                Outcome::Done(()) => {
                    break Response::Written {
                        timestamp: cell.timestamp,
                    };
                }
                Outcome::Failed { required, received } => {
                    Metrics::add(&self.metrics.unavailable, 1);
                    break not_reached(level, required, received);
                }
                Outcome::Pending => {}
            }
            match tokio::time::timeout_at(deadline, asks.next()).await {
                Ok(Some((index, reply))) => {
                    answered[index] = true;
                    match self.write_acked(&targets[index], reply) {
                        true => round.acked(),
                        false => round.missed(self.hint(&targets[index].node, &key, &cell)),
                    }
                }
                Ok(None) | Err(_) => {
                    Metrics::add(&self.metrics.timeouts, 1);
                    let (required, received) = round.counts();
                    break not_reached(level, required, received);
                }
            }
        };
        if asks.is_empty() {
            return answer;
        }
        if Instant::now() >= deadline {
            self.write_unanswered(&targets, &answered, &key, &cell);
            return answer;
        }
        // Replicas not heard from yet still get the write, or a hint.
        let shared = self.clone();
        tokio::spawn(async move {
            while let Ok(Some((index, reply))) =
                tokio::time::timeout_at(deadline, asks.next()).await
            {
                answered[index] = true;
                if !shared.write_acked(&targets[index], reply) {
                    shared.hint(&targets[index].node, &key, &cell);
                }
            }
            shared.write_unanswered(&targets, &answered, &key, &cell);
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
        let mut asks = FuturesUnordered::new();
        for (index, target) in targets.iter().enumerate() {
            if target.node == self.node_id {
                match self.engine.get_cell(&key) {
                    Ok(cell) => round.reply(target.node.clone(), cell),
                    Err(e) => {
                        tracing::error!(error = %e, "local replica read failed");
                        round.missed();
                    }
                }
                continue;
            }
            let request = Request::ReplicaRead { key: key.clone() };
            let ask = match target.up {
                true => self.ask(target, index, request).await,
                false => None,
            };
            match ask {
                Some(ask) => asks.push(ask),
                None => round.missed(),
            }
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.read_timeout_ms);
        let winner = loop {
            match round.outcome() {
                Outcome::Done(winner) => break winner,
                Outcome::Failed { required, received } => {
                    Metrics::add(&self.metrics.unavailable, 1);
                    return not_reached(level, required, received);
                }
                Outcome::Pending => {}
            }
            match tokio::time::timeout_at(deadline, asks.next()).await {
                Ok(Some(vote)) => self.count_vote(&mut round, &targets, vote),
                Ok(None) | Err(_) => {
                    Metrics::add(&self.metrics.timeouts, 1);
                    return not_reached(level, round.required(), round.votes());
                }
            }
        };
        let mut repaired = Vec::new();
        if level != ConsistencyLevel::One || asks.is_empty() {
            // Before answering: the stale replicas that voted get the winner.
            self.repair(&key, &round, &targets, &mut repaired).await;
        }
        if !asks.is_empty() {
            // After answering: late votes are compared too, and repaired.
            let shared = self.clone();
            tokio::spawn(async move {
                while let Ok(Some(vote)) = tokio::time::timeout_at(deadline, asks.next()).await {
                    shared.count_vote(&mut round, &targets, vote);
                }
                shared.repair(&key, &round, &targets, &mut repaired).await;
            });
        }
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
            if repaired.contains(&node) {
                continue;
            }
            let Some(target) = targets.iter().find(|t| t.node == node) else {
                continue;
            };
            match self.replica_write(&node, target.addr, key, &newest).await {
                Ok(()) => {
                    Metrics::add(&self.metrics.read_repairs, 1);
                    repaired.push(node);
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
