//! A new node's join. A node that starts with empty storage, knowing no
//! peers and not among its own seeds, is new: it starts JOINING, in no
//! ring of its own (it coordinates like any node). Once it sees the nodes
//! that hold data UP (or a while after it saw the first), it waits for its
//! turn: joins go one at a time, in the order they started
//! ([`crate::cluster::moving_node`]), each waiting as long as the move
//! before it takes (a joiner that died keeps its turn until `cassio
//! removenode` ends it, and the wait says so). When every live peer sees
//! it as the node moving, they write to it as a pending replica. Then it
//! asks each node holding data to stream what the ring with it gives to
//! nodes that did not hold it (`handover.rs`). When every one of them has
//! streamed, reads move to the ring with it (`JoiningStreamed`), and once
//! every live peer reads so it turns NORMAL and takes its place in the
//! ring. A restart keeps the phase reached (the `joining` marker).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::shared::NodeShared;
use crate::cluster::{Member, NodeStatus, moving_node};
use crate::error::Result;
use crate::net::Transport;
use crate::types::NodeId;

/// The file in a data directory that says its node has not finished
/// joining: after a restart it is still JOINING, whatever it holds. It
/// holds the join's phase: a node that stops once streamed comes back in
/// that phase, keeping its turn (another joiner taking it would write to
/// other nodes while some coordinators still read from this one).
const JOINING_MARKER: &str = "joining";
const STREAMED: &[u8] = b"streamed\n";

/// The join's phase, if the node of `data_dir` was joining when it stopped.
pub(super) fn interrupted(data_dir: &Path) -> Option<NodeStatus> {
    let marker = data_dir.join(JOINING_MARKER);
    if !marker.exists() {
        return None;
    }
    // A marker that cannot be read: stream again, which is always safe.
    match std::fs::read(&marker) {
        Ok(text) if text == STREAMED => Some(NodeStatus::JoiningStreamed),
        _ => Some(NodeStatus::Joining),
    }
}

/// Records that the node of `data_dir` is joining, in `phase`.
pub(super) fn mark(data_dir: &Path, phase: NodeStatus) -> Result<()> {
    let text: &[u8] = match phase {
        NodeStatus::JoiningStreamed => STREAMED,
        _ => b"joining\n",
    };
    crate::storage::write_atomically(&data_dir.join(JOINING_MARKER), text)
}

/// A new node streams once every node holding data is UP, or this many
/// gossip intervals after it first saw one, from those that are.
const JOIN_WAIT_INTERVALS: u64 = 30;

/// Streaming is asked for again after this many gossip intervals while a
/// peer refused (it may not know the new node yet, or is busy with another
/// join), at most [`JOIN_ATTEMPTS`] times. Waiting for another node's move
/// to finish is no attempt: it takes as long as that move takes.
const JOIN_RETRY_INTERVALS: u64 = 3;
const JOIN_ATTEMPTS: u32 = 60;

/// While another node's move holds the turn, the wait is logged when that
/// node or its UP/DOWN changes, and every this many retries (about 30
/// gossip intervals).
const TURN_WAIT_LOG_EVERY: u64 = 10;

/// The member whose move the cluster carries out now, by `members` (this
/// node's view), if that is not `me`: a joiner waits for it to finish, or
/// to be removed if it is gone for good.
fn turn_of_another<'m>(members: &'m [Member], me: &NodeId) -> Option<&'m Member> {
    let (moving, _) = moving_node(members.iter().map(|m| (&m.node, m.status, m.generation)))?;
    if moving == me {
        return None;
    }
    members.iter().find(|m| m.node == *moving)
}

/// Says which move this joiner waits for; a DOWN one is named with the
/// command that ends its turn.
fn log_turn_wait(holder: &Member) {
    let (node, status) = (&holder.node, holder.status.as_str());
    if holder.up {
        tracing::info!(%node, status, "waiting for another node's move to finish before this node's join");
    } else {
        tracing::warn!(
            %node,
            status,
            "waiting for the move of a node that is DOWN before this node's join: if it is gone for good, run `cassio removenode {node}`"
        );
    }
}

enum Phase {
    /// No node holding data seen yet.
    Waiting,
    /// One seen at this time.
    Seen { at_ms: u64 },
    /// Streaming asked for (the task runs or ended).
    Started,
}

pub(super) struct Join {
    phase: Phase,
    gossip_interval_ms: u64,
    data_dir: PathBuf,
    running: JoinSet<()>,
}

impl<T: Transport> NodeShared<T> {
    /// One attempt to have this joining node's keys streamed to it: once
    /// every live peer writes to it as a pending replica (it is the node
    /// moving, and only then is streaming complete), every live node
    /// holding data streams. Whether all did.
    async fn stream_for_join(self: &Arc<Self>) -> bool {
        let me = &self.node_id;
        let unconfirmed = self.wait_until_peers_act_on(me, NodeStatus::Joining).await;
        if unconfirmed > 0 {
            tracing::info!(
                unconfirmed,
                "live peers do not all see this node as the one joining yet"
            );
            return false;
        }
        let outcomes = self.stream_everywhere(me, true).await;
        let mut refused: Vec<String> = outcomes
            .iter()
            .filter_map(|(peer, streamed)| streamed.as_ref().err().map(|e| format!("{peer}: {e}")))
            .collect();
        // This node itself is always asked: someone else must answer.
        if outcomes.len() < 2 {
            refused.push("no node holding data is UP".into());
        }
        if !refused.is_empty() {
            tracing::info!(?refused, "streaming for this node's join refused");
        }
        refused.is_empty()
    }
}

/// The join's last step, once streamed: NORMAL when every live peer
/// reads by the ring with this node.
async fn finish<T: Transport>(node: &Arc<NodeShared<T>>, data_dir: &Path) {
    node.wait_until_all_peers_act_on(&node.node_id, NodeStatus::JoiningStreamed)
        .await;
    if let Err(e) = std::fs::remove_file(data_dir.join(JOINING_MARKER)) {
        tracing::warn!(error = %e, "cannot remove the joining marker");
    }
    node.gossiper.lock().set_status(NodeStatus::Normal);
    tracing::info!(node = %node.node_id, "joined: NORMAL");
}

impl Join {
    pub(super) fn new(gossip_interval_ms: u64, data_dir: PathBuf) -> Join {
        Join {
            phase: Phase::Waiting,
            gossip_interval_ms,
            data_dir,
            running: JoinSet::new(),
        }
    }

    /// Starts the join in the background once it is due (called every
    /// gossip tick while the node is JOINING).
    pub(super) fn start_if_due<T: Transport>(&mut self, node: &Arc<NodeShared<T>>) {
        let now_ms = node.now_ms();
        let members = node.members();
        let mut owners = members
            .iter()
            .filter(|m| m.node != node.node_id && m.status.owns_data())
            .peekable();
        if owners.peek().is_none() {
            return;
        }
        let all_up = owners.all(|m| m.up);
        let seen_at_ms = match self.phase {
            Phase::Started => return,
            Phase::Waiting => {
                self.phase = Phase::Seen { at_ms: now_ms };
                now_ms
            }
            Phase::Seen { at_ms } => at_ms,
        };
        if !all_up && now_ms < seen_at_ms + JOIN_WAIT_INTERVALS * self.gossip_interval_ms {
            return;
        }
        self.phase = Phase::Started;
        let node = node.clone();
        let data_dir = self.data_dir.clone();
        let retry = Duration::from_millis(JOIN_RETRY_INTERVALS * self.gossip_interval_ms);
        self.running.spawn(async move {
            let mut attempt = 0;
            // The move waited for as last logged, and the waits since.
            let mut waited_for = None;
            let mut waits_unlogged = 0u64;
            while attempt < JOIN_ATTEMPTS {
                if let Some(holder) = turn_of_another(&node.members(), &node.node_id) {
                    let seen = Some((holder.node.clone(), holder.up));
                    if seen != waited_for || waits_unlogged >= TURN_WAIT_LOG_EVERY {
                        log_turn_wait(holder);
                        waited_for = seen;
                        waits_unlogged = 0;
                    }
                    waits_unlogged += 1;
                    tokio::time::sleep(retry).await;
                    continue;
                }
                attempt += 1;
                if node.stream_for_join().await {
                    // Reads move to the ring with this node while writes
                    // still go to both; once every node reads so, writes
                    // may leave the old ring.
                    if let Err(e) = mark(&data_dir, NodeStatus::JoiningStreamed) {
                        tracing::warn!(error = %e, "cannot record the join's phase");
                    }
                    node.gossiper.lock().set_status(NodeStatus::JoiningStreamed);
                    finish(&node, &data_dir).await;
                    return;
                }
                tracing::info!(attempt, "streaming for this node's join to be asked again");
                tokio::time::sleep(retry).await;
            }
            tracing::error!(
                attempts = JOIN_ATTEMPTS,
                "the nodes holding data did not all stream for this node's join; it stays JOINING (restart it to try again)"
            );
        });
    }

    /// Finishes a join that was streamed before the node restarted (called
    /// every gossip tick while the node is `JoiningStreamed`).
    pub(super) fn finish_if_restarted<T: Transport>(&mut self, node: &Arc<NodeShared<T>>) {
        if matches!(self.phase, Phase::Started) {
            return;
        }
        self.phase = Phase::Started;
        let (node, data_dir) = (node.clone(), self.data_dir.clone());
        self.running
            .spawn(async move { finish(&node, &data_dir).await });
    }

    /// The node is stopping.
    pub(super) fn stop(mut self) {
        self.running.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, status: NodeStatus, generation: u64, up: bool) -> Member {
        Member {
            node: NodeId::from(name),
            up,
            status,
            generation,
            heartbeat: 1,
            native_addr: "127.0.0.1:9000".parse().unwrap(),
            resp_addr: None,
            load_bytes: 0,
            vnodes: 16,
            phi: 0.0,
            heartbeat_interval_ms: 1000.0,
        }
    }

    #[test]
    fn a_joiner_waits_for_the_move_that_holds_the_turn_whoever_it_is() {
        use NodeStatus::*;
        let me = NodeId::from("n5");
        let mut members = vec![
            member("n0", Normal, 1, true),
            member("n1", Normal, 1, true),
            member("n5", Joining, 20, true),
        ];
        assert_eq!(turn_of_another(&members, &me), None, "the only joiner");
        // An earlier joiner that died holds the turn until it is removed.
        members.push(member("n4", Joining, 10, false));
        let holder = turn_of_another(&members, &me).expect("n4's turn");
        assert_eq!((holder.node.as_str(), holder.up), ("n4", false));
        members[3].status = Left;
        assert_eq!(turn_of_another(&members, &me), None, "n4 removed");
        // A leave goes before a join that has not streamed; a later joiner
        // with a smaller name does not.
        members[0].status = Leaving;
        members.push(member("n2", Joining, 30, true));
        let holder = turn_of_another(&members, &me).expect("n0's leave");
        assert_eq!(holder.node.as_str(), "n0");
        members[0].status = Normal;
        assert_eq!(turn_of_another(&members, &me), None, "started before n2");
    }

    #[test]
    fn a_restarted_joiner_comes_back_in_the_phase_it_reached() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(interrupted(dir.path()), None, "never joined");
        mark(dir.path(), NodeStatus::Joining).unwrap();
        assert_eq!(interrupted(dir.path()), Some(NodeStatus::Joining));
        mark(dir.path(), NodeStatus::JoiningStreamed).unwrap();
        assert_eq!(
            interrupted(dir.path()),
            Some(NodeStatus::JoiningStreamed),
            "keeps its turn"
        );
        // A marker of any other content (an older build's, a torn one)
        // streams again.
        std::fs::write(dir.path().join(JOINING_MARKER), b"stre").unwrap();
        assert_eq!(interrupted(dir.path()), Some(NodeStatus::Joining));
    }
}
