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

use tokio::sync::mpsc;

use super::shared::NodeShared;
use crate::coordinator::{ConsistencyLevel, Metrics, Outcome, ReadRound, WriteRound};
use crate::error::{Error, Result};
use crate::net::Transport;
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
        let now = self.now_ms();
        let members = gossiper.members(now);
        let ring = gossiper.ring();
        ring.replicas(key, self.config.replication_factor as usize)
            .into_iter()
            .filter_map(|node| {
                let m = members.iter().find(|m| &m.node == node)?;
                Some(Target {
                    node: node.clone(),
                    addr: m.native_addr,
                    up: m.up,
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

    async fn replica_read(
        &self,
        node: &NodeId,
        addr: SocketAddr,
        key: &[u8],
    ) -> Result<Option<Cell>> {
        let request = Request::ReplicaRead { key: key.to_vec() };
        match self
            .peer_call(addr, request, self.config.read_timeout_ms)
            .await?
        {
            Response::ReplicaCell(cell) => Ok(cell),
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
        let (tx, mut rx) = mpsc::channel(targets.len());
        let (key, cell) = (Arc::new(key), Arc::new(cell));
        for target in targets {
            if target.node == self.node_id {
                match self.engine.write(&key, Cell::clone(&cell)) {
                    Ok(()) => round.acked(),
                    Err(e) => {
                        tracing::error!(error = %e, "local replica write failed");
                        round.missed(false);
                    }
                }
            } else if !target.up {
                round.missed(self.hint(&target.node, &key, &cell));
            } else {
                let (shared, tx, key, cell) = (self.clone(), tx.clone(), key.clone(), cell.clone());
                tokio::spawn(async move {
                    let acked = shared
                        .replica_write(&target.node, target.addr, &key, &cell)
                        .await
                        .is_ok();
                    // The hint is kept even if the client was answered already.
                    let hinted = !acked && shared.hint(&target.node, &key, &cell);
                    let _ = tx.send((acked, hinted)).await;
                });
            }
        }
        drop(tx);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.write_timeout_ms);
        loop {
            match round.outcome() {
                Outcome::Done(()) => {
                    return Response::Written {
                        timestamp: cell.timestamp,
                    };
                }
                Outcome::Failed { required, received } => {
                    Metrics::add(&self.metrics.unavailable, 1);
                    return not_reached(level, required, received);
                }
                Outcome::Pending => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((true, _))) => round.acked(),
                Ok(Some((false, hinted))) => round.missed(hinted),
                Ok(None) | Err(_) => {
                    Metrics::add(&self.metrics.timeouts, 1);
                    let Outcome::Failed { required, received } = round.failed() else {
                        unreachable!()
                    };
                    return not_reached(level, required, received);
                }
            }
        }
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
        let key = Arc::new(key);
        let (tx, mut rx) = mpsc::channel(targets.len());
        let mut addrs = Vec::new();
        for target in targets {
            addrs.push((target.node.clone(), target.addr));
            if target.node == self.node_id {
                match self.engine.get_cell(&key) {
                    Ok(cell) => round.reply(target.node, cell),
                    Err(e) => {
                        tracing::error!(error = %e, "local replica read failed");
                        round.missed();
                    }
                }
            } else if !target.up {
                round.missed();
            } else {
                let (shared, tx, key) = (self.clone(), tx.clone(), key.clone());
                tokio::spawn(async move {
                    let reply = shared
                        .replica_read(&target.node, target.addr, &key)
                        .await
                        .ok();
                    let _ = tx.send((target.node, reply)).await;
                });
            }
        }
        drop(tx);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.read_timeout_ms);
        let winner = loop {
            match round.outcome() {
                Outcome::Done(winner) => break winner,
                Outcome::Failed { required, received } => {
                    Metrics::add(&self.metrics.unavailable, 1);
                    return not_reached(level, required, received);
                }
                Outcome::Pending => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((node, Some(cell)))) => round.reply(node, cell),
                Ok(Some((_, None))) => round.missed(),
                Ok(None) | Err(_) => {
                    Metrics::add(&self.metrics.timeouts, 1);
                    let Outcome::Failed { required, received } = round.failed() else {
                        unreachable!()
                    };
                    return not_reached(level, required, received);
                }
            }
        };
        let mut repaired = Vec::new();
        if level != ConsistencyLevel::One || round.outstanding() == 0 {
            // Before answering: the stale replicas that voted get the winner.
            self.repair(&key, &round, &addrs, &mut repaired).await;
        }
        if round.outstanding() > 0 {
            // After answering: late votes are compared too, and repaired.
            let shared = self.clone();
            tokio::spawn(async move {
                while let Ok(Some((node, reply))) =
                    tokio::time::timeout_at(deadline, rx.recv()).await
                {
                    match reply {
                        Some(cell) => round.reply(node, cell),
                        None => round.missed(),
                    }
                }
                shared.repair(&key, &round, &addrs, &mut repaired).await;
            });
        }
        let now_ms = (self.clock)();
        match winner
            .as_ref()
            .and_then(|c| c.live_value(now_ms).map(|v| (v.to_vec(), c.timestamp)))
        {
            Some((value, timestamp)) => Response::Value {
                value: Some(value),
                timestamp: Some(timestamp),
            },
            None => Response::Value {
                value: None,
                timestamp: None,
            },
        }
    }

    /// Writes the newest vote to every replica whose vote was older.
    async fn repair(
        &self,
        key: &[u8],
        round: &ReadRound,
        addrs: &[(NodeId, SocketAddr)],
        repaired: &mut Vec<NodeId>,
    ) {
        let Some(newest) = round.newest() else { return };
        for node in round.stale() {
            if repaired.contains(&node) {
                continue;
            }
            let Some((_, addr)) = addrs.iter().find(|(n, _)| *n == node) else {
                continue;
            };
            match self.replica_write(&node, *addr, key, &newest).await {
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
