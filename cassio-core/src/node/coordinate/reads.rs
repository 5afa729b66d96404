//! Coordinating a batch of reads: each key asks as many replicas as its
//! level needs (this node's own copy first, when it holds one), another in
//! the place of one that fails, and the rest once one is slow (speculative
//! retry); a key is answered with the newest vote once enough are in;
//! stale replicas among the voters are repaired, before answering at TWO
//! and above, after at ONE.

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
    /// Per key: which of its live remote replicas to ask next.
    next_remote: Vec<NextRemote>,
    /// Read repairs done: (job, replica, timestamp of the cell written), so
    /// the repair after late votes writes a replica again only if a newer
    /// cell won meanwhile.
    repaired: Vec<(usize, NodeId, u64)>,
}

/// Which of a key's live remote replicas a read asks next. They are taken
/// in turn from a place the key's hash picks, so that the reads of keys
/// with the same replicas spread over all of them, and each key asks its
/// replicas in the same order every time.
#[derive(Clone, Copy, Default)]
struct NextRemote {
    /// Where in the list of live remote replicas the key starts.
    from: usize,
    /// How many of them are asked already.
    asked: usize,
}

impl NextRemote {
    fn new(key: &[u8]) -> Self {
        let mut hasher = fnv::FnvHasher::default();
        std::hash::Hasher::write(&mut hasher, key);
        NextRemote {
            from: std::hash::Hasher::finish(&hasher) as usize,
            asked: 0,
        }
    }

    /// The next live replica of `targets` other than `local` not asked
    /// yet, if any is left.
    fn take<'t>(&mut self, targets: &'t [Target], local: &NodeId) -> Option<&'t Target> {
        let count = live_remotes(targets, local).count();
        if self.asked >= count {
            return None;
        }
        let index = (self.from % count + self.asked) % count;
        self.asked += 1;
        live_remotes(targets, local).nth(index)
    }

    /// True while some live remote replica is not asked yet.
    fn untried(&self, targets: &[Target], local: &NodeId) -> bool {
        self.asked < live_remotes(targets, local).count()
    }
}

/// The replicas of `targets` a read may ask: live, and not `local`.
fn live_remotes<'t>(targets: &'t [Target], local: &NodeId) -> impl Iterator<Item = &'t Target> {
    targets.iter().filter(move |t| t.up && t.node != *local)
}

/// Adds `job` to the group of `target` among `groups[first..]` (the ones
/// not sent yet), or to a new one.
fn enlist(groups: &mut Vec<Group>, first: usize, target: &Target, job: usize) {
    match groups[first..]
        .iter_mut()
        .find(|g| g.target.node == target.node)
    {
        Some(group) => group.jobs.push(job),
        None => groups.push(Group {
            target: target.clone(),
            jobs: vec![job],
            bytes: 0,
        }),
    }
}

/// What a replica's answer to a group leaves to do.
enum Followup {
    Nothing,
    /// It answered the first keys only (a frame's worth): ask it the rest.
    AskAgain(Group),
    /// It failed: these keys need another replica each.
    Missed(Vec<usize>),
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
            replicas: self.replicas(keys.iter().copied(), RingUse::Reads),
            next_remote: Vec::with_capacity(keys.len()),
            repaired: Vec::new(),
        };
        let ask_every_replica = self.config.read_speculative_retry_ms == 0;
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
            let mut next_remote = NextRemote::new(key);
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
                    }
                }
                // The remote replicas the level still needs (all of them,
                // with speculative retry off).
                let (required, votes) = round.counts();
                let wanted = if ask_every_replica {
                    targets.len()
                } else {
                    required.saturating_sub(votes)
                };
                for _ in 0..wanted {
                    let Some(target) = next_remote.take(targets, &self.node_id) else {
                        break;
                    };
                    enlist(&mut batch.groups, 0, target, job);
                }
            }
            batch.rounds.push(round);
            batch.next_remote.push(next_remote);
        }
        drop(snapshot);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.config.read_timeout_ms);
        let mut replies = Replies::default();
        let mut missed = Vec::new();
        for group in 0..batch.groups.len() {
            missed.extend(
                self.ask_for_votes(&mut batch, group, keys, &mut replies, deadline)
                    .await,
            );
        }
        self.ask_others(&mut batch, missed, false, keys, &mut replies, deadline)
            .await;
        let speculate_at = started + Duration::from_millis(self.config.read_speculative_retry_ms);
        let mut speculated = ask_every_replica;
        let mut timer = pin!(tokio::time::sleep_until(if speculated {
            deadline
        } else {
            speculate_at.min(deadline)
        }));
        while self.settle(&mut phases, &batch.rounds, level) {
            match replies.next(timer.as_mut()).await {
                Some((group, reply)) => match self.votes_answered(&mut batch, group, reply) {
                    Followup::Nothing => {}
                    Followup::AskAgain(rest) => {
                        self.ask_again(&mut batch, rest, keys, &mut replies, deadline)
                            .await
                    }
                    Followup::Missed(jobs) => {
                        self.ask_others(&mut batch, jobs, false, keys, &mut replies, deadline)
                            .await
                    }
                },
                None if !speculated && Instant::now() < deadline => {
                    // A replica is slow: every key still waiting asks all
                    // its other replicas too.
                    speculated = true;
                    let waiting: Vec<usize> = (0..phases.len())
                        .filter(|&j| matches!(phases[j], Phase::Pending))
                        .collect();
                    let retried = waiting.iter().filter(|&&j| {
                        batch.next_remote[j].untried(batch.replicas.of(j), &self.node_id)
                    });
                    Metrics::add(&self.metrics.speculative_retries, retried.count() as u64);
                    self.ask_others(&mut batch, waiting, true, keys, &mut replies, deadline)
                        .await;
                    timer.as_mut().reset(deadline);
                }
                None => self.time_out(&mut phases, &batch.rounds, level),
            }
        }
        let met: Vec<bool> = phases.iter().map(|p| matches!(p, Phase::Met)).collect();
        // Votes that already arrived are counted now: often the last
        // replica answered too, and no background work is needed.
        while let Some((group, reply)) = replies.next_ready() {
            if let Followup::AskAgain(rest) = self.votes_answered(&mut batch, group, reply) {
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
                    if let Followup::AskAgain(rest) =
                        shared.votes_answered(&mut batch, group, reply)
                    {
                        rest.jobs.iter().for_each(|&job| batch.rounds[job].missed());
                    }
                }
                // Replicas that did not answer by the deadline.
                for (_, reply) in &replies.slots {
                    reply.unanswered(&shared.peers);
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
    ) -> Followup {
        let Group { target, jobs, .. } = &batch.groups[group];
        match reply {
            Ok(Response::ReplicaCells(cells)) if !cells.is_empty() && cells.len() <= jobs.len() => {
                let answered = cells.len();
                for (&job, cell) in jobs.iter().zip(cells) {
                    batch.rounds[job].reply(target.node.clone(), cell);
                }
                if answered == jobs.len() {
                    return Followup::Nothing;
                }
                Followup::AskAgain(Group {
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
                Followup::Missed(jobs.clone())
            }
        }
    }

    /// Asks a replica again for the keys it left out of an answer (and, if
    /// it cannot be sent to, other replicas).
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
        let missed = self
            .ask_for_votes(batch, group, keys, replies, deadline)
            .await;
        self.ask_others(batch, missed, false, keys, replies, deadline)
            .await;
    }

    /// Asks each of `jobs` whose level is not met yet one more of its live
    /// replicas, or every one not asked yet if `all`. A replica that cannot
    /// be sent to counts as missed, and the next one is asked in its place.
    async fn ask_others(
        &self,
        batch: &mut ReadBatch,
        mut jobs: Vec<usize>,
        all: bool,
        keys: &[&[u8]],
        replies: &mut Replies,
        deadline: Instant,
    ) {
        while !jobs.is_empty() {
            let first_new = batch.groups.len();
            for job in jobs.drain(..) {
                let (required, votes) = batch.rounds[job].counts();
                if votes >= required {
                    continue;
                }
                let targets = batch.replicas.of(job);
                let next_remote = &mut batch.next_remote[job];
                while let Some(target) = next_remote.take(targets, &self.node_id) {
                    enlist(&mut batch.groups, first_new, target, job);
                    if !all {
                        break;
                    }
                }
            }
            for group in first_new..batch.groups.len() {
                jobs.extend(
                    self.ask_for_votes(batch, group, keys, replies, deadline)
                        .await,
                );
            }
        }
    }

    /// Sends group `group` its `ReplicaReads`; if that cannot be sent, its
    /// keys count as missed, and are returned.
    async fn ask_for_votes(
        &self,
        batch: &mut ReadBatch,
        group: usize,
        keys: &[&[u8]],
        replies: &mut Replies,
        deadline: Instant,
    ) -> Vec<usize> {
        let Group { target, jobs, .. } = &batch.groups[group];
        let request =
            ReplicaRequest::Reads(jobs.iter().map(|&job| Bytes::new(keys[job])).collect());
        if self.ask(target, group, &request, replies, deadline).await {
            return Vec::new();
        }
        for &job in jobs {
            batch.rounds[job].missed();
        }
        jobs.clone()
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn target(name: &str, up: bool) -> Target {
        Target {
            node: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            up,
        }
    }

    #[test]
    fn a_key_asks_each_live_remote_replica_once_and_keys_spread_over_them() {
        let local = NodeId::from("self");
        let targets = [
            target("a", true),
            target("self", true),
            target("b", true),
            target("down", false),
            target("c", true),
        ];
        let mut first_asked: BTreeMap<String, usize> = BTreeMap::new();
        for key in 0..300 {
            let key = format!("key{key}");
            let mut next = NextRemote::new(key.as_bytes());
            let mut asked = Vec::new();
            while let Some(t) = next.take(&targets, &local) {
                asked.push(t.node.to_string());
            }
            let mut each = asked.clone();
            each.sort();
            assert_eq!(each, ["a", "b", "c"], "{key}: every live remote once");
            let again = NextRemote::new(key.as_bytes()).take(&targets, &local);
            assert_eq!(again.map(|t| t.node.to_string()), Some(asked[0].clone()));
            *first_asked.entry(asked[0].clone()).or_default() += 1;
        }
        // 300 keys over 3 replicas: each is asked first for about 100.
        assert_eq!(first_asked.len(), 3, "{first_asked:?}");
        assert!(first_asked.values().all(|&n| n >= 70), "{first_asked:?}");
    }
}
