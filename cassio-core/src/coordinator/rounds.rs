//! One request's bookkeeping: which replicas answered what, and whether the
//! consistency level is met, still possible, or lost. No IO: the node feeds
//! replies in and asks for the outcome.

use super::consistency::ConsistencyLevel;
use crate::storage::Cell;
use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<T> {
    Pending,
    Done(T),
    /// The level cannot be met (or the deadline passed).
    Failed {
        required: usize,
        received: usize,
    },
}

/// What a coordinator asks of any round while it waits.
pub trait Round {
    /// (Replies required, replies that count so far).
    fn counts(&self) -> (usize, usize);

    /// Replicas asked that have not answered yet.
    fn outstanding(&self) -> usize;

    /// Done once enough replies count; failed once every replica asked
    /// answered (or was skipped) without enough. Replicas already asked are
    /// awaited even when the level is out of reach, so `received` is a fact.
    fn outcome(&self) -> Outcome<()> {
        let (required, received) = self.counts();
        if received >= required {
            Outcome::Done(())
        } else if self.outstanding() == 0 {
            Outcome::Failed { required, received }
        } else {
            Outcome::Pending
        }
    }
}

/// A write sent to every replica.
#[derive(Debug)]
pub struct WriteRound {
    level: ConsistencyLevel,
    required: usize,
    outstanding: usize,
    acks: usize,
    hints: usize,
}

impl WriteRound {
    pub fn new(level: ConsistencyLevel, replicas: usize) -> Self {
        WriteRound {
            level,
            required: level.required(replicas),
            outstanding: replicas,
            acks: 0,
            hints: 0,
        }
    }

    /// Adds replicas the key is moving to (a node joins or leaves): each is
    /// written too, and the round needs one more acknowledgement for each,
    /// UP or DOWN, so that the level holds on the ring after the move as on
    /// the ring before (Cassandra's blockFor plus pending). A DOWN one is
    /// hinted, and its acknowledgement must come from another replica:
    /// while the moving node is DOWN, writes to its keys need every other
    /// replica. Not at ANY, where a hint counts.
    pub fn with_pending(mut self, up: usize, down: usize) -> Self {
        self.outstanding += up + down;
        if self.level != ConsistencyLevel::Any {
            self.required += up + down;
        }
        self
    }

    pub fn required(&self) -> usize {
        self.required
    }

    pub fn acked(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.acks += 1;
    }

    /// The replica did not acknowledge; a hint was (`stored`) or was not kept.
    pub fn missed(&mut self, hint_stored: bool) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.hints += usize::from(hint_stored);
    }

    /// Acknowledgements that count toward the level (hints only for ANY).
    fn counted(&self) -> usize {
        match self.level {
            ConsistencyLevel::Any => self.acks + self.hints,
            _ => self.acks,
        }
    }
}

impl Round for WriteRound {
    /// Acknowledgements count (hints too, at ANY).
    fn counts(&self) -> (usize, usize) {
        (self.required, self.counted())
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }
}

/// A read: every replica's reply is a vote (a cell, or none).
#[derive(Debug)]
pub struct ReadRound {
    required: usize,
    outstanding: usize,
    votes: Vec<(NodeId, Option<Cell>)>,
    /// Index in `votes` of the newest cell so far (last-write-wins; the
    /// first of equals), kept as votes arrive.
    newest: Option<usize>,
}

impl ReadRound {
    pub fn new(level: ConsistencyLevel, replicas: usize) -> Self {
        ReadRound {
            required: level.required(replicas),
            outstanding: replicas,
            votes: Vec::with_capacity(replicas),
            newest: None,
        }
    }

    pub fn required(&self) -> usize {
        self.required
    }

    pub fn reply(&mut self, node: NodeId, cell: Option<Cell>) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if let Some(c) = &cell {
            let best = self.newest.and_then(|i| self.votes[i].1.as_ref());
            if best.is_none_or(|b| c.supersedes(b)) {
                self.newest = Some(self.votes.len());
            }
        }
        self.votes.push((node, cell));
    }

    pub fn missed(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// The newest cell among the votes so far (last-write-wins).
    pub fn newest(&self) -> Option<&Cell> {
        self.votes[self.newest?].1.as_ref()
    }

    /// [`ReadRound::newest`], taken out of the round.
    pub fn into_newest(mut self) -> Option<Cell> {
        let index = self.newest?;
        self.votes.swap_remove(index).1
    }

    /// Replicas whose vote is older than (or missing) the newest cell: the
    /// ones read repair must write.
    pub fn stale(&self) -> impl Iterator<Item = &NodeId> {
        let newest = self.newest();
        self.votes
            .iter()
            .filter(move |(_, c)| {
                newest.is_some_and(|n| c.as_ref().is_none_or(|c| n.supersedes(c)))
            })
            .map(|(node, _)| node)
    }
}

impl Round for ReadRound {
    /// Votes count; once enough are in, the answer is
    /// [`ReadRound::newest`].
    fn counts(&self) -> (usize, usize) {
        (self.required, self.votes.len())
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_write_needs_two_of_three_and_fails_fast() {
        let mut w = WriteRound::new(ConsistencyLevel::Quorum, 3);
        w.acked();
        assert_eq!(w.outcome(), Outcome::Pending);
        w.missed(true);
        assert_eq!(
            w.outcome(),
            Outcome::Pending,
            "one replica still outstanding"
        );
        w.missed(true);
        assert_eq!(
            w.outcome(),
            Outcome::Failed {
                required: 2,
                received: 1
            }
        );
    }

    /// A key moving to a node that is DOWN: its hint does not count, so a
    /// QUORUM write needs all three of the ring's replicas. Otherwise two
    /// would do, and a read by the ring after the move could ask the moving
    /// node and the one replica the write missed.
    #[test]
    fn a_down_pending_replica_still_needs_its_acknowledgement_from_another() {
        let mut w = WriteRound::new(ConsistencyLevel::Quorum, 3).with_pending(0, 1);
        assert_eq!(w.required(), 3);
        w.missed(true);
        w.acked();
        w.acked();
        assert_eq!(w.outcome(), Outcome::Pending, "two of the ring's three");
        w.acked();
        assert_eq!(w.outcome(), Outcome::Done(()));

        let mut w = WriteRound::new(ConsistencyLevel::Quorum, 3).with_pending(0, 1);
        w.missed(true);
        w.acked();
        w.acked();
        w.missed(true);
        assert_eq!(
            w.outcome(),
            Outcome::Failed {
                required: 3,
                received: 2
            }
        );
    }

    #[test]
    fn any_counts_hints() {
        let mut w = WriteRound::new(ConsistencyLevel::Any, 3);
        w.missed(false);
        w.missed(false);
        assert_eq!(w.outcome(), Outcome::Pending);
        w.missed(true);
        assert_eq!(w.outcome(), Outcome::Done(()));
    }

    #[test]
    fn reads_vote_for_the_newest_and_name_stale_replicas() {
        let mut r = ReadRound::new(ConsistencyLevel::All, 3);
        r.reply("a".into(), Some(Cell::value("old", 1)));
        r.reply("b".into(), Some(Cell::value("new", 2)));
        assert_eq!(r.outcome(), Outcome::Pending);
        r.reply("c".into(), None);
        assert_eq!(r.outcome(), Outcome::Done(()));
        assert_eq!(r.newest(), Some(&Cell::value("new", 2)));
        let stale: Vec<_> = r.stale().cloned().collect();
        assert_eq!(stale, vec![NodeId::from("a"), NodeId::from("c")]);
        assert_eq!(r.into_newest(), Some(Cell::value("new", 2)));
    }

    #[test]
    fn all_fails_once_the_asked_replicas_answered() {
        let mut r = ReadRound::new(ConsistencyLevel::All, 3);
        r.missed();
        r.reply("a".into(), None);
        assert_eq!(
            r.outcome(),
            Outcome::Pending,
            "b was asked: wait for its answer"
        );
        r.reply("b".into(), None);
        assert_eq!(
            r.outcome(),
            Outcome::Failed {
                required: 3,
                received: 2
            }
        );
    }

    #[test]
    fn a_tombstone_wins_and_repairs_the_value_holder() {
        let mut r = ReadRound::new(ConsistencyLevel::Quorum, 3);
        r.reply("a".into(), Some(Cell::value("v", 1)));
        r.reply("b".into(), Some(Cell::tombstone(2)));
        assert_eq!(r.outcome(), Outcome::Done(()));
        assert_eq!(r.newest(), Some(&Cell::tombstone(2)));
        let stale: Vec<_> = r.stale().cloned().collect();
        assert_eq!(stale, vec![NodeId::from("a")]);
    }
}
