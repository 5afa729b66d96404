//! Coordinating a batch of writes: every replica gets each write (the local
//! one applied directly, down ones hinted); a key is answered once its level
//! is met or cannot be; replicas still due then are awaited in the
//! background and hinted if they fail.

use std::pin::pin;

use futures_util::future::join;

use super::*;
use crate::coordinator::WriteRound;
use crate::proto::KeyedCellRef;
use crate::storage::validate_write;

/// A batch of writes being coordinated: each write's round, and the
/// replicas asked.
struct WriteBatch {
    writes: Vec<(Vec<u8>, Cell)>,
    rounds: Vec<WriteRound>,
    groups: Vec<Group>,
}

impl<T: Transport> NodeShared<T> {
    /// Counts a replica's answer to a batch of writes; the writes it did not
    /// acknowledge are hinted.
    async fn writes_answered(&self, batch: &mut WriteBatch, group: usize, reply: Result<Response>) {
        match reply {
            Ok(Response::Done) => {
                for &job in &batch.groups[group].jobs {
                    batch.rounds[job].acked();
                }
            }
            other => {
                self.replica_failed(&batch.groups[group].target, other);
                self.writes_missed(batch, group).await;
            }
        }
    }

    /// Group `group`'s replica missed its writes: they are hinted, and each
    /// counted as missed (or hinted) in its round.
    async fn writes_missed(&self, batch: &mut WriteBatch, group: usize) {
        let Group { target, jobs, .. } = &batch.groups[group];
        let missed: Vec<_> = jobs.iter().map(|&job| (job, &target.node)).collect();
        let hinted = self.hint_writes(&batch.writes, &missed).await;
        for &job in jobs {
            batch.rounds[job].missed(hinted);
        }
    }

    /// Hints the (job, replica) writes `missed` in one write to the hint
    /// store; true if stored.
    async fn hint_writes(&self, writes: &[(Vec<u8>, Cell)], missed: &[(usize, &NodeId)]) -> bool {
        let hints: Vec<_> = missed
            .iter()
            .map(|&(job, node)| (node, &writes[job].0[..], &writes[job].1))
            .collect();
        self.hint(&hints).await
    }

    /// Replicas that did not answer a batch of writes by the deadline get
    /// hints, and are marked stalled ([`crate::node::peers`]).
    async fn writes_unanswered(&self, batch: &mut WriteBatch, replies: Replies) {
        for (group, reply) in replies.slots {
            let target = &batch.groups[group].target;
            tracing::debug!(replica = %target.node, "replica did not answer writes in time");
            reply.unanswered(&self.peers);
            self.writes_missed(batch, group).await;
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
    /// Each write's time to its answer goes into the write latency
    /// histogram.
    pub(crate) async fn coordinate_writes(
        self: &Arc<Self>,
        writes: Vec<(Vec<u8>, Cell)>,
        level: ConsistencyLevel,
    ) -> Vec<Response> {
        let (started, count) = (Instant::now(), writes.len());
        let answers = self.write_batch(writes, level, started).await;
        self.metrics.write_latency.record(started.elapsed(), count);
        answers
    }

    /// [`Self::coordinate_writes`], for writes that arrived at `started`:
    /// their write timeout counts from then.
    async fn write_batch(
        self: &Arc<Self>,
        writes: Vec<(Vec<u8>, Cell)>,
        level: ConsistencyLevel,
        started: Instant,
    ) -> Vec<Response> {
        // A node still joining waits first; the write timeout then counts
        // from when it can ask its replicas.
        let joined = *self.joined.borrow();
        let started = match joined {
            true => started,
            false => match self.wait_until_joined().await {
                Some(refusal) => return vec![refusal; writes.len()],
                None => Instant::now(),
            },
        };
        let mut phases: Vec<Phase> = writes.iter().map(|_| Phase::Pending).collect();
        let mut rounds = Vec::with_capacity(writes.len());
        let mut groups: Vec<Group> = Vec::new();
        Metrics::add(&self.metrics.writes, writes.len() as u64);
        let (replicas, pending) = self.write_replicas(writes.iter().map(|(key, _)| &key[..]));
        let budget = self.message_budget_bytes();
        // (job, replica) for replicas known to be down: hinted, not asked.
        let mut down = Vec::new();
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
            let round = match pending.get(job) {
                Some(&(up, down)) if !targets.is_empty() => {
                    WriteRound::new(level, targets.len() - up - down).with_pending(up, down)
                }
                _ => WriteRound::new(level, targets.len()),
            };
            self.check_reachable(&mut phases[job], targets, round.required(), level);
            if !matches!(phases[job], Phase::Pending) {
                rounds.push(round);
                continue;
            }
            // This node's own replica is written below, with the batch's
            // other local writes.
            for target in targets.iter().filter(|t| t.node != self.node_id) {
                if !target.up {
                    down.push((job, &target.node));
                    continue;
                }
                let bytes = keyed_cell_bytes(key, cell);
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
        // This node's own replicas, applied now under one acquisition of the
        // write lock; in batch sync mode their fsync is awaited after the
        // other replicas are asked, so the disks work at the same time.
        let local_jobs: Vec<usize> = (0..writes.len())
            .filter(|&job| {
                matches!(phases[job], Phase::Pending)
                    && replicas.of(job).iter().any(|t| t.node == self.node_id)
            })
            .collect();
        let local = local_jobs
            .iter()
            .map(|&job| (&writes[job].0[..], writes[job].1.clone()));
        let applied = self.engine.write_batch_unsynced(local.collect());
        let mut batch = WriteBatch {
            writes,
            rounds,
            groups,
        };
        let deadline = started + Duration::from_millis(self.config.write_timeout_ms);
        let mut replies = Replies::default();
        let mut unsent = Vec::new();
        for index in 0..batch.groups.len() {
            let sent = {
                let group = &batch.groups[index];
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
                self.ask(&group.target, index, &request, &mut replies, deadline)
                    .await
            };
            if !sent {
                unsent.push(index);
            }
        }
        // Hints for the writes missed so far (replicas known to be down, or
        // whose request could not be sent), in one write, and the local
        // replicas' fsync: each may wait for a group commit; they wait
        // together, after every replica was asked.
        let mut missed = down;
        for &index in &unsent {
            let Group { target, jobs, .. } = &batch.groups[index];
            missed.extend(jobs.iter().map(|&job| (job, &target.node)));
        }
        let local_synced = async {
            match applied {
                Ok(lsn) => synced(&self.engine, lsn).await,
                Err(e) => Err(e),
            }
        };
        let written = if missed.is_empty() {
            // The usual case: no hint write to wait for beside the fsync.
            local_synced.await
        } else {
            let (hinted, written) =
                join(self.hint_writes(&batch.writes, &missed), local_synced).await;
            for &(job, _) in &missed {
                batch.rounds[job].missed(hinted);
            }
            written
        };
        if let Err(e) = &written {
            tracing::error!(error = %e, "local replica write failed");
        }
        for &job in &local_jobs {
            match written {
                Ok(()) => batch.rounds[job].acked(),
                Err(_) => batch.rounds[job].missed(false),
            }
        }
        let mut timer = pin!(tokio::time::sleep_until(deadline));
        while self.settle(&mut phases, &batch.rounds, level) {
            match replies.next(timer.as_mut()).await {
                Some((group, reply)) => self.writes_answered(&mut batch, group, reply).await,
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
        // Failures that arrived are hinted in the background with the rest.
        let mut failed = Vec::new();
        while let Some((group, reply)) = replies.next_ready() {
            match reply {
                Ok(Response::Done) => self.writes_answered(&mut batch, group, reply).await,
                failure => failed.push((group, failure)),
            }
        }
        if !failed.is_empty() || !replies.slots.is_empty() {
            // Replicas not heard from yet still get the writes, or hints
            // (at once if the deadline has passed); the answers need not
            // wait for either.
            let shared = self.clone();
            self.background.run(async move {
                for (group, failure) in failed {
                    shared.writes_answered(&mut batch, group, failure).await;
                }
                let mut timer = pin!(tokio::time::sleep_until(deadline));
                while let Some((group, reply)) = replies.next(timer.as_mut()).await {
                    shared.writes_answered(&mut batch, group, reply).await;
                }
                shared.writes_unanswered(&mut batch, replies).await;
            });
        }
        answers
    }
}
