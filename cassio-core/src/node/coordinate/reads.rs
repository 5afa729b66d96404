//! Coordinating a batch of reads: every live replica votes; a key is
//! answered with the newest vote once enough are in; stale replicas are
//! repaired, before answering at TWO and above, after at ONE.

use std::pin::pin;

use futures_util::future::join_all;
use serde_bytes::Bytes;

use super::*;
use crate::coordinator::ReadRound;
use crate::storage::validate_key;

/// A batch of reads being coordinated: each key's round and replicas, and
/// the replicas asked.
struct ReadBatch {
    rounds: Vec<ReadRound>,
    groups: Vec<Group>,
    replicas: Replicas,
    /// Read repairs done: (job, replica, timestamp of the cell written), so
    /// the repair after late votes writes a replica again only if a newer
    /// cell won meanwhile.
    repaired: Vec<(usize, NodeId, u64)>,
}

/// The keys of a read batch whose level was met and whose votes disagree:
/// the ones read repair writes.
fn stale_jobs<'b>(batch: &'b ReadBatch, met: &'b [bool]) -> impl Iterator<Item = usize> + 'b {
    (0..batch.rounds.len()).filter(|&job| met[job] && batch.rounds[job].stale().next().is_some())
}

/// One key's read: the newest cell if it is a live value (`None`: the key
/// has none), or the answer that says why the read failed.
pub(crate) type CellRead = std::result::Result<Option<Cell>, Box<Response>>;

/// A key's read as the answer to a client's get.
fn value_answer(read: CellRead) -> Response {
    match read {
        Ok(Some(cell)) => Response::Value {
            timestamp: Some(cell.timestamp),
            value: cell.into_value(),
        },
        Ok(None) => Response::Value {
            value: None,
            timestamp: None,
        },
        Err(answer) => *answer,
    }
}

impl<T: Transport> NodeShared<T> {
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

    /// Reads every key at `level`; one answer per key, in order. Each key's
    /// time to its answer goes into the read latency histogram.
    pub(crate) async fn coordinate_reads(
        self: &Arc<Self>,
        keys: &[&[u8]],
        level: ConsistencyLevel,
    ) -> Vec<Response> {
        let reads = self.coordinate_cell_reads(keys, level).await;
        reads.into_iter().map(value_answer).collect()
    }

    /// [`NodeShared::coordinate_reads`], answered with each key's live
    /// cell, its expiry included (the Redis port's TTL and EXPIRE).
    pub(crate) async fn coordinate_cell_reads(
        self: &Arc<Self>,
        keys: &[&[u8]],
        level: ConsistencyLevel,
    ) -> Vec<CellRead> {
        let started = Instant::now();
        let reads = self.read_batch(keys, level).await;
        self.metrics
            .read_latency
            .record(started.elapsed(), keys.len());
        reads
    }

    async fn read_batch(
        self: &Arc<Self>,
        keys: &[&[u8]],
        level: ConsistencyLevel,
    ) -> Vec<CellRead> {
        if let Some(refusal) = self.wait_until_joined().await {
            return vec![Err(Box::new(refusal)); keys.len()];
        }
        let mut phases: Vec<Phase> = keys.iter().map(|_| Phase::Pending).collect();
        let mut batch = ReadBatch {
            rounds: Vec::with_capacity(keys.len()),
            groups: Vec::new(),
            replicas: self.replicas(keys.iter().copied()),
            repaired: Vec::new(),
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
        for group in 0..batch.groups.len() {
            self.ask_for_votes(&mut batch, group, keys, &mut replies, deadline)
                .await;
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
            Box::pin(self.repair_all(keys, &mut batch, &met)).await;
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
        let answers: Vec<CellRead> = phases
            .into_iter()
            .zip(winners)
            .map(|(phase, winner)| match phase {
                Phase::Answered(answer) => Err(Box::new(answer)),
                Phase::Pending => Err(Box::new(left_pending())),
                Phase::Met => Ok(winner.filter(|cell| cell.live_value(now_ms).is_some())),
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
                shared.repair_all(&keys, &mut batch, &met).await;
            });
        }
        answers
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

    /// Asks a replica again for the keys it left out of an answer.
    async fn ask_again(
        &self,
        batch: &mut ReadBatch,
        rest: Group,
        keys: &[&[u8]],
        replies: &mut Replies,
        deadline: Instant,
    ) {
        batch.groups.push(rest);
        let group = batch.groups.len() - 1;
        self.ask_for_votes(batch, group, keys, replies, deadline)
            .await;
    }

    /// Sends group `group` its `ReplicaReads`; if that cannot be sent, its
    /// keys count as missed.
    async fn ask_for_votes(
        &self,
        batch: &mut ReadBatch,
        group: usize,
        keys: &[&[u8]],
        replies: &mut Replies,
        deadline: Instant,
    ) {
        let Group { target, jobs, .. } = &batch.groups[group];
        let request =
            ReplicaRequest::Reads(jobs.iter().map(|&job| Bytes::new(keys[job])).collect());
        if !self.ask(target, group, &request, replies, deadline).await {
            for &job in jobs {
                batch.rounds[job].missed();
            }
        }
    }

    /// Read repair of every key whose level was met and whose votes
    /// disagree, all at once (a slow replica delays the batch by one write
    /// timeout at most, not one per key).
    async fn repair_all(&self, keys: &[&[u8]], batch: &mut ReadBatch, met: &[bool]) {
        let done = {
            let batch = &*batch;
            let repairs = stale_jobs(batch, met)
                .map(|job| async move { (job, self.repair(keys[job], job, batch).await) });
            join_all(repairs).await
        };
        for (job, written) in done {
            batch
                .repaired
                .extend(written.into_iter().map(|(node, ts)| (job, node, ts)));
        }
    }

    /// Writes key `job`'s newest vote to every replica whose vote was older
    /// and that was not already given it; returns the replicas written,
    /// with the timestamp of the cell.
    async fn repair(&self, key: &[u8], job: usize, batch: &ReadBatch) -> Vec<(NodeId, u64)> {
        let (round, targets) = (&batch.rounds[job], batch.replicas.of(job));
        let Some(newest) = round.newest() else {
            return Vec::new();
        };
        let mut written = Vec::new();
        for node in round.stale() {
            let given = (batch.repaired.iter())
                .any(|(j, n, ts)| *j == job && n == node && *ts == newest.timestamp);
            if given {
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
                    written.push((node.clone(), newest.timestamp));
                }
                Err(e) => tracing::debug!(replica = %node, error = %e, "read repair failed"),
            }
        }
        written
    }
}
