//! The gossiper: membership as a pure state machine (the raft-rs shape). The
//! node ticks it every `gossip_interval_ms` and steps it with received
//! messages; it hands back messages to send. It does no IO and reads no
//! clock: `now_ms` and an `Rng` come in, so the same code runs over TCP and
//! in simulation.
//!
//! A round: the initiator sends a [`GossipSyn`] of digests to one peer; the
//! peer answers a [`GossipAck`] with what the initiator lacks plus requests
//! for what it lacks itself; the initiator finishes with a [`GossipAck2`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fnv::{FnvHashMap, FnvHashSet};
use rand::Rng;
use rand::seq::IndexedRandom;

use super::phi::ArrivalWindow;
use super::state::{
    Digest, EndpointDelta, EndpointState, GossipAck, GossipAck2, GossipSyn, NodeStatus, Versioned,
    moving_node,
};
use crate::ring::{Ring, Vector};
use crate::types::NodeId;

/// Membership tunables.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    pub interval_ms: u64,
    /// Phi above which a peer is considered DOWN.
    pub phi_convict_threshold: f64,
    /// Addresses to contact when alone, and now and then afterwards.
    pub seeds: Vec<SocketAddr>,
}

/// What this node starts gossiping about itself.
#[derive(Clone, Debug)]
pub struct LocalEndpoint {
    pub node: NodeId,
    /// Start time in ms; must grow across restarts of the same node.
    pub generation: u64,
    pub native_addr: SocketAddr,
    pub resp_addr: Option<SocketAddr>,
    pub vnodes: Vec<Vector>,
    pub status: NodeStatus,
}

/// One endpoint as this node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub node: NodeId,
    pub up: bool,
    pub status: NodeStatus,
    pub generation: u64,
    pub heartbeat: u64,
    pub native_addr: SocketAddr,
    pub resp_addr: Option<SocketAddr>,
    pub load_bytes: u64,
    pub vnodes: usize,
    /// Current suspicion (0 for this node itself).
    pub phi: f64,
    /// Mean interval between heartbeats this node has seen from it.
    pub heartbeat_interval_ms: f64,
}

pub struct Gossiper {
    local: NodeId,
    config: GossipConfig,
    /// This endpoint's version counter.
    version: u64,
    endpoints: BTreeMap<NodeId, EndpointState>,
    /// Looked up for every request's replicas: FNV, not SipHash.
    detectors: FnvHashMap<NodeId, ArrivalWindow>,
    /// Peers remembered from before a restart and not heard of since: the
    /// first heartbeat gossip brings about one may be as old as what was
    /// kept (a peer that did not restart still holds the dead one's last
    /// heartbeat), so only a later one counts as a sign of life.
    unconfirmed: FnvHashSet<NodeId>,
    ring: Arc<Ring>,
    /// The ring once the node moving now ([`moving_node`]) has joined or
    /// left; `None` while nobody is.
    pending_ring: Option<Arc<Ring>>,
    /// The ring reads use: the pending ring once the move has streamed,
    /// the ring before.
    read_ring: Arc<Ring>,
    /// Whether there is a pending ring, for readers that skip the lock.
    moving: Arc<AtomicBool>,
    /// When [`Gossiper::forgive_local_pause`] last ran.
    last_check_ms: Option<u64>,
}

/// Checks for a local pause further apart than this many gossip intervals,
/// and than [`LOCAL_PAUSE_MIN_MS`], mean this node itself was not running
/// meanwhile (5 s at the default 1 s interval, as Cassandra's
/// `max_local_pause_in_ms`).
const LOCAL_PAUSE_INTERVALS: u64 = 5;
/// With short intervals (tests), a loaded machine can be late by several.
const LOCAL_PAUSE_MIN_MS: u64 = 2000;

impl Gossiper {
    pub fn new(local: LocalEndpoint, config: GossipConfig) -> Self {
        let state = EndpointState {
            generation: local.generation,
            heartbeat: 6,
            status: Versioned {
                value: local.status,
                version: 1,
            },
            native_addr: Versioned {
                value: local.native_addr,
                version: 2,
            },
            resp_addr: Versioned {
                value: local.resp_addr,
                version: 3,
            },
            vnodes: Versioned {
                value: local.vnodes,
                version: 4,
            },
            load_bytes: Versioned {
                value: 0,
                version: 5,
            },
        };
        let mut gossiper = Gossiper {
            local: local.node.clone(),
            config,
            version: 6,
            endpoints: BTreeMap::from([(local.node, state)]),
            detectors: FnvHashMap::default(),
            unconfirmed: FnvHashSet::default(),
            ring: Arc::new(Ring::default()),
            pending_ring: None,
            read_ring: Arc::new(Ring::default()),
            moving: Arc::default(),
            last_check_ms: None,
        };
        gossiper.rebuild_ring();
        gossiper
    }

    pub fn local(&self) -> &NodeId {
        &self.local
    }

    /// Starts from what this node knew before it restarted: each peer's
    /// last state, down until heard from, so the ring keeps every peer (a
    /// peer still down stays a replica, and gets hints). Gossip replaces a
    /// state with anything newer. This node itself, and peers already
    /// known, are skipped.
    pub fn remember(&mut self, peers: Vec<(NodeId, EndpointState)>) {
        for (node, mut state) in peers {
            // A kept heartbeat is old news: passed between two restarted
            // nodes it would look like a new one and make the peer look up.
            state.heartbeat = 0;
            if node != self.local && !self.endpoints.contains_key(&node) {
                self.unconfirmed.insert(node.clone());
                self.endpoints.insert(node, state);
            }
        }
        self.rebuild_ring();
    }

    /// Every peer's state, to keep across restarts (see [`Gossiper::remember`]).
    pub fn peer_states(&self) -> Vec<(NodeId, EndpointState)> {
        self.endpoints
            .iter()
            .filter(|(node, _)| **node != self.local)
            .map(|(node, state)| (node.clone(), state.clone()))
            .collect()
    }

    /// Changes when a peer's state worth keeping does (a new peer, a
    /// restart, a status, address or vnode change), not with heartbeats or
    /// load.
    pub fn peers_fingerprint(&self) -> Vec<(NodeId, [u64; 5])> {
        self.endpoints
            .iter()
            .filter(|(node, _)| **node != self.local)
            .map(|(node, s)| {
                let versions = [
                    s.generation,
                    s.status.version,
                    s.native_addr.version,
                    s.resp_addr.version,
                    s.vnodes.version,
                ];
                (node.clone(), versions)
            })
            .collect()
    }

    fn local_state(&mut self) -> &mut EndpointState {
        self.endpoints
            .get_mut(&self.local)
            .expect("the local endpoint is always known")
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// One gossip interval: bumps the heartbeat and picks whom to gossip
    /// with: a random live peer; with probability down/(live+1) a peer
    /// believed down; and a seed when nobody live was picked or, now and then,
    /// anyway (so partitions heal through seeds).
    pub fn tick(&mut self, now_ms: u64, rng: &mut impl Rng) -> Vec<(SocketAddr, GossipSyn)> {
        let version = self.next_version();
        self.local_state().heartbeat = version;
        let local_addr = self.endpoints[&self.local].native_addr.value;
        let (mut live, mut down) = (Vec::new(), Vec::new());
        for (node, state) in &self.endpoints {
            if *node == self.local || state.status.value == NodeStatus::Left {
                continue;
            }
            let addr = state.native_addr.value;
            if self.is_up(node, now_ms) {
                live.push(addr)
            } else {
                down.push(addr)
            }
        }
        let seeds: Vec<SocketAddr> = self
            .config
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != local_addr)
            .collect();
        let mut targets = Vec::new();
        if let Some(peer) = live.choose(rng) {
            targets.push(*peer);
        }
        if !down.is_empty() && rng.random_range(0..=live.len()) < down.len() {
            targets.extend(down.choose(rng));
        }
        let seed_odds = seeds.len() as f64 / (live.len() + down.len() + 1) as f64;
        if !seeds.is_empty() && (targets.is_empty() || rng.random_bool(seed_odds.min(1.0))) {
            targets.extend(seeds.choose(rng));
        }
        targets.sort();
        targets.dedup();
        let syn = self.syn();
        targets
            .into_iter()
            .map(|addr| (addr, syn.clone()))
            .collect()
    }

    fn syn(&self) -> GossipSyn {
        GossipSyn {
            digests: self
                .endpoints
                .iter()
                .map(|(node, s)| Digest {
                    node: node.clone(),
                    generation: s.generation,
                    max_version: s.max_version(),
                })
                .collect(),
        }
    }

    /// Step 2, on the receiving peer.
    pub fn handle_syn(&mut self, syn: GossipSyn, _now_ms: u64) -> GossipAck {
        let mut ack = GossipAck::default();
        let mut mentioned = std::collections::BTreeSet::new();
        for digest in syn.digests {
            mentioned.insert(digest.node.clone());
            match self.endpoints.get(&digest.node) {
                None => ack.requests.push(Digest {
                    max_version: 0,
                    ..digest
                }),
                Some(state) if state.generation > digest.generation => {
                    ack.deltas.push(state.delta_after(&digest.node, 0));
                }
                Some(state) if state.generation < digest.generation => {
                    ack.requests.push(Digest {
                        max_version: 0,
                        ..digest
                    });
                }
                Some(state) => {
                    let mine = state.max_version();
                    if mine > digest.max_version {
                        ack.deltas
                            .push(state.delta_after(&digest.node, digest.max_version));
                    } else if mine < digest.max_version {
                        ack.requests.push(Digest {
                            max_version: mine,
                            ..digest
                        });
                    }
                }
            }
        }
        for (node, state) in &self.endpoints {
            if !mentioned.contains(node) {
                ack.deltas.push(state.delta_after(node, 0));
            }
        }
        ack
    }

    /// Step 3, back on the initiator.
    pub fn handle_ack(&mut self, ack: GossipAck, now_ms: u64) -> GossipAck2 {
        for delta in ack.deltas {
            self.apply(delta, now_ms);
        }
        let deltas = ack
            .requests
            .into_iter()
            .filter_map(|request| {
                let state = self.endpoints.get(&request.node)?;
                let after = if state.generation == request.generation {
                    request.max_version
                } else {
                    0
                };
                (state.generation >= request.generation)
                    .then(|| state.delta_after(&request.node, after))
            })
            .collect();
        GossipAck2 { deltas }
    }

    /// `node` itself took part in a gossip round with this node: direct
    /// proof that it is alive, which a peer remembered from before a
    /// restart otherwise only gives by a second heartbeat.
    pub fn heard_from(&mut self, node: &NodeId, now_ms: u64) {
        // The round's own deltas may have spent the peer's first heartbeat
        // already: what matters is that it has no arrival on record yet (a
        // peer still unconfirmed never has one).
        self.unconfirmed.remove(node);
        if !self.detectors.contains_key(node) {
            self.detector(node).heartbeat(now_ms);
        }
    }

    /// End of the round, on the peer.
    pub fn handle_ack2(&mut self, ack2: GossipAck2, now_ms: u64) {
        for delta in ack2.deltas {
            self.apply(delta, now_ms);
        }
    }

    fn apply(&mut self, delta: EndpointDelta, now_ms: u64) {
        if delta.node == self.local {
            return; // this node is the authority on itself
        }
        let node = delta.node.clone();
        let mut ring_changed = false;
        match self.endpoints.get_mut(&node) {
            Some(state) if delta.generation == state.generation => {
                let beat = delta.heartbeat > state.heartbeat;
                ring_changed = state.merge(delta);
                if beat && !self.unconfirmed.remove(&node) {
                    self.detector(&node).heartbeat(now_ms);
                }
            }
            Some(state) if delta.generation < state.generation => {}
            _ => {
                // A new endpoint, or a restart (higher generation): only a
                // full state will do; a partial one waits for the next round.
                if let Some(state) = delta.into_full() {
                    self.unconfirmed.remove(&node);
                    if self.endpoints.contains_key(&node) {
                        tracing::info!(%node, generation = state.generation, "peer restarted");
                    } else {
                        tracing::info!(%node, addr = %state.native_addr.value, "peer joined the view");
                    }
                    self.endpoints.insert(node.clone(), state);
                    let mut window = ArrivalWindow::new(self.config.interval_ms);
                    window.heartbeat(now_ms);
                    self.detectors.insert(node, window);
                    ring_changed = true;
                }
            }
        }
        if ring_changed {
            self.rebuild_ring();
        }
    }

    fn detector(&mut self, node: &NodeId) -> &mut ArrivalWindow {
        let interval = self.config.interval_ms;
        self.detectors
            .entry(node.clone())
            .or_insert_with(|| ArrivalWindow::new(interval))
    }

    /// Called once a gossip interval, before liveness is read. If the last
    /// call was longer ago than [`LOCAL_PAUSE_INTERVALS`] allows, this node
    /// was not running (SIGSTOP, a stalled VM, a starved runtime) and could
    /// hear no heartbeat: every peer's silence during the pause is forgiven,
    /// so that coming back does not mark the whole cluster DOWN. A peer that
    /// died meanwhile is convicted as usual, counting from the pause's end.
    /// Returns how long the pause was, in ms.
    pub fn forgive_local_pause(&mut self, now_ms: u64) -> Option<u64> {
        let last = self.last_check_ms.replace(now_ms)?;
        let paused_ms = self.local_pause_ms(last, now_ms)?;
        for detector in self.detectors.values_mut() {
            detector.forgive(paused_ms, now_ms);
        }
        Some(paused_ms)
    }

    /// How much of the time from `last_check_ms` to `now_ms` this node was
    /// paused: all but one interval, if that is over the threshold.
    fn local_pause_ms(&self, last_check_ms: u64, now_ms: u64) -> Option<u64> {
        let interval = self.config.interval_ms;
        let threshold = interval
            .saturating_mul(LOCAL_PAUSE_INTERVALS)
            .max(LOCAL_PAUSE_MIN_MS);
        let gap = now_ms.saturating_sub(last_check_ms);
        (gap > threshold).then(|| gap - interval)
    }

    /// The time silence is judged at: `now_ms`, or, when this node has been
    /// paused and [`Gossiper::forgive_local_pause`] has not run since,
    /// the time it stopped (a request served first after the pause must not
    /// find every peer DOWN).
    fn judged_at(&self, now_ms: u64) -> u64 {
        match self.last_check_ms {
            Some(last) => now_ms - self.local_pause_ms(last, now_ms).unwrap_or(0),
            None => now_ms,
        }
    }

    /// This node's view of whether `node` is up (itself always is).
    pub fn is_up(&self, node: &NodeId, now_ms: u64) -> bool {
        self.is_up_judged_at(node, self.judged_at(now_ms))
    }

    /// [`Gossiper::is_up`] with silence judged at `at_ms` ([`Gossiper::judged_at`]).
    fn is_up_judged_at(&self, node: &NodeId, at_ms: u64) -> bool {
        *node == self.local
            || self
                .detectors
                .get(node)
                .is_some_and(|d| d.phi(at_ms) < self.config.phi_convict_threshold)
    }

    /// Publishes this node's data size.
    pub fn set_load(&mut self, load_bytes: u64) {
        if self.endpoints[&self.local].load_bytes.value != load_bytes {
            let version = self.next_version();
            self.local_state().load_bytes = Versioned {
                value: load_bytes,
                version,
            };
        }
    }

    /// Publishes a status change of this node.
    pub fn set_status(&mut self, status: NodeStatus) {
        let version = self.next_version();
        self.local_state().status = Versioned {
            value: status,
            version,
        };
        self.rebuild_ring();
    }

    /// Announces that a peer which is down for good has left the cluster
    /// (an operator's `removenode`): its status becomes LEFT at a version
    /// above any it gossiped, so the change spreads as if the peer had said
    /// it, and its vnodes leave the ring. The peer must be known, not this
    /// node, and not LEFT already.
    pub fn remove_peer(&mut self, node: &NodeId) -> Result<(), String> {
        if *node == self.local {
            return Err(format!("{node} is this node: decommission it instead"));
        }
        let Some(state) = self.endpoints.get_mut(node) else {
            return Err(format!("no node named {node} is known to this node"));
        };
        if state.status.value == NodeStatus::Left {
            return Err(format!("{node} has left the cluster already"));
        }
        state.status = Versioned {
            value: NodeStatus::Left,
            version: state.max_version() + 1,
        };
        self.rebuild_ring();
        Ok(())
    }

    /// The status this node knows for `node`.
    pub fn status(&self, node: &NodeId) -> Option<NodeStatus> {
        self.endpoints.get(node).map(|s| s.status.value)
    }

    /// Every endpoint's placement inputs, for clients that route by key.
    pub fn topology(&self, now_ms: u64) -> Vec<(NodeId, SocketAddr, bool, bool, Vec<Vector>)> {
        self.endpoints
            .iter()
            .map(|(node, s)| {
                (
                    node.clone(),
                    s.native_addr.value,
                    self.is_up(node, now_ms),
                    s.status.value.owns_data(),
                    s.vnodes.value.clone(),
                )
            })
            .collect()
    }

    /// Where a known endpoint listens (native protocol) and whether this
    /// node sees it up.
    pub fn reach(&self, node: &NodeId, now_ms: u64) -> Option<(SocketAddr, bool)> {
        let state = self.endpoints.get(node)?;
        Some((state.native_addr.value, self.is_up(node, now_ms)))
    }

    /// The native address of a known endpoint.
    pub fn native_addr(&self, node: &NodeId) -> Option<SocketAddr> {
        self.endpoints.get(node).map(|s| s.native_addr.value)
    }

    /// Every known endpoint with this node's view of it.
    pub fn members(&self, now_ms: u64) -> Vec<Member> {
        let at_ms = self.judged_at(now_ms);
        self.endpoints
            .iter()
            .map(|(node, s)| Member {
                node: node.clone(),
                up: self.is_up_judged_at(node, at_ms),
                status: s.status.value,
                generation: s.generation,
                heartbeat: s.heartbeat,
                native_addr: s.native_addr.value,
                resp_addr: s.resp_addr.value,
                load_bytes: s.load_bytes.value,
                vnodes: s.vnodes.value.len(),
                phi: self.detectors.get(node).map_or(0.0, |d| d.phi(at_ms)),
                heartbeat_interval_ms: self
                    .detectors
                    .get(node)
                    .map_or(0.0, ArrivalWindow::mean_interval_ms),
            })
            .collect()
    }

    /// The ring over endpoints whose status owns data (NORMAL, LEAVING),
    /// up or down: a down replica is still a replica (it gets hints).
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.clone()
    }

    /// The ring data moves to while a node joins or leaves (the one moving
    /// now, [`moving_node`]: in if it joins, out if it leaves); `None`
    /// while nobody does. Coordinators write to its new replicas too
    /// ("pending" replicas, as Cassandra's).
    pub fn pending_ring(&self) -> Option<Arc<Ring>> {
        self.pending_ring.clone()
    }

    /// The ring reads use: the ring, or the pending ring once the moving
    /// node has streamed (its second phase, see [`NodeStatus`]).
    pub fn read_ring(&self) -> Arc<Ring> {
        self.read_ring.clone()
    }

    /// A flag that is set, as the view changes, while there is a pending
    /// ring: a coordinator checks it without taking this gossiper's lock.
    pub fn moving_flag(&self) -> Arc<AtomicBool> {
        self.moving.clone()
    }

    fn rebuild_ring(&mut self) {
        let ring_over = |keep: &dyn Fn(&NodeId, NodeStatus) -> bool| {
            Ring::new(
                self.endpoints
                    .iter()
                    .filter(|(node, s)| keep(node, s.status.value))
                    .map(|(node, s)| (node.clone(), &s.vnodes.value[..])),
            )
        };
        self.ring = Arc::new(ring_over(&|_, status| status.owns_data()));
        let moving = moving_node(
            self.endpoints
                .iter()
                .map(|(n, s)| (n, s.status.value, s.generation)),
        );
        self.pending_ring = moving.map(|(mover, mover_status)| {
            Arc::new(ring_over(&|node, status| match node == mover {
                true => mover_status.is_joining(),
                false => status.owns_data(),
            }))
        });
        self.read_ring = match (moving, &self.pending_ring) {
            (Some((_, status)), Some(pending)) if status.is_streamed() => pending.clone(),
            _ => self.ring.clone(),
        };
        self.moving
            .store(self.pending_ring.is_some(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9000 + i))
    }

    fn node(i: u16, generation: u64, seeds: Vec<SocketAddr>) -> Gossiper {
        let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(i));
        Gossiper::new(
            LocalEndpoint {
                node: NodeId::new(format!("n{i}")),
                generation,
                native_addr: addr(i),
                resp_addr: None,
                vnodes: crate::ring::random_vnode_vectors(4, &mut rng),
                status: NodeStatus::Normal,
            },
            GossipConfig {
                interval_ms: 100,
                phi_convict_threshold: 8.0,
                seeds,
            },
        )
    }

    /// One full round between two gossipers, as the network would carry it.
    fn round(a: &mut Gossiper, b: &mut Gossiper, now: u64) {
        let syn = a.syn();
        let ack = b.handle_syn(syn, now);
        let ack2 = a.handle_ack(ack, now);
        b.handle_ack2(ack2, now);
    }

    #[test]
    fn a_round_spreads_everything_both_ways() {
        let (mut a, mut b, mut c) = (node(0, 1, vec![]), node(1, 1, vec![]), node(2, 1, vec![]));
        round(&mut a, &mut b, 0);
        round(&mut c, &mut b, 0);
        round(&mut a, &mut b, 0);
        for g in [&a, &b, &c] {
            let names: Vec<_> = g
                .members(0)
                .into_iter()
                .map(|m| m.node.to_string())
                .collect();
            if g.local().as_str() == "n2" {
                assert_eq!(names, ["n0", "n1", "n2"], "c learned a through b");
            } else {
                assert_eq!(names, ["n0", "n1", "n2"]);
            }
        }
        assert_eq!(a.ring().nodes().len(), 3);
    }

    fn names(ring: &Ring) -> Vec<String> {
        ring.nodes().iter().map(|n| n.to_string()).collect()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The ring, the pending ring and the read ring `g` sees, by name.
    fn rings(g: &Gossiper) -> (Vec<String>, Option<Vec<String>>, Vec<String>) {
        (
            names(&g.ring()),
            g.pending_ring().map(|r| names(&r)),
            names(&g.read_ring()),
        )
    }

    /// A join, phase by phase, as a node that watches it sees the rings:
    /// writes go to the ring and to the pending ring (with the one node
    /// moving), reads move to the pending ring once it has streamed, and a
    /// node waiting its turn to join is in neither.
    #[test]
    fn a_join_moves_reads_a_phase_before_writes_leave_the_old_ring() {
        let mut a = node(0, 1, vec![]);
        let mut b = node(1, 1, vec![]);
        let mut c = node(2, 1, vec![]);
        let mut d = node(3, 1, vec![]);
        round(&mut a, &mut b, 0);
        c.set_status(NodeStatus::Joining);
        d.set_status(NodeStatus::Joining);
        round(&mut a, &mut c, 0);
        round(&mut a, &mut d, 0);
        let (ab, abc) = (strings(&["n0", "n1"]), strings(&["n0", "n1", "n2"]));
        assert_eq!(rings(&a), (ab.clone(), Some(abc.clone()), ab.clone()));

        c.set_status(NodeStatus::JoiningStreamed);
        round(&mut a, &mut c, 0);
        assert_eq!(rings(&a), (ab.clone(), Some(abc.clone()), abc.clone()));

        c.set_status(NodeStatus::Normal);
        round(&mut a, &mut c, 0);
        let abcd = strings(&["n0", "n1", "n2", "n3"]);
        assert_eq!(
            rings(&a),
            (abc.clone(), Some(abcd), abc.clone()),
            "the next joiner's turn"
        );
    }

    /// A leave, phase by phase: the leaving node stays a replica for
    /// writes until it is LEFT, reads leave it once it has streamed.
    #[test]
    fn a_leave_moves_reads_off_the_node_a_phase_before_writes() {
        let mut a = node(0, 1, vec![]);
        let mut b = node(1, 1, vec![]);
        let mut c = node(2, 1, vec![]);
        round(&mut a, &mut b, 0);
        round(&mut a, &mut c, 0);
        let (ab, abc) = (strings(&["n0", "n1"]), strings(&["n0", "n1", "n2"]));
        for (status, read) in [
            (NodeStatus::Leaving, &abc),
            (NodeStatus::LeavingStreamed, &ab),
        ] {
            c.set_status(status);
            round(&mut a, &mut c, 0);
            assert_eq!(rings(&a), (abc.clone(), Some(ab.clone()), read.clone()));
        }
        c.set_status(NodeStatus::Left);
        round(&mut a, &mut c, 0);
        assert_eq!(rings(&a), (ab.clone(), None, ab.clone()));
    }

    #[test]
    fn the_node_moving_is_a_streamed_one_then_a_leaving_one_then_the_first_joining() {
        let n = |i: u8| NodeId::new(format!("n{i}"));
        let (n1, n2, n3, n4) = (n(1), n(2), n(3), n(4));
        let moving = |members: &[(&NodeId, NodeStatus, u64)]| {
            moving_node(members.iter().copied()).map(|(node, s)| (node.to_string(), s))
        };
        use NodeStatus::*;
        assert_eq!(moving(&[(&n1, Normal, 1), (&n2, Left, 1)]), None);
        assert_eq!(
            moving(&[(&n1, Normal, 1), (&n3, Joining, 5), (&n2, Joining, 5)]),
            Some(("n2".into(), Joining)),
            "started together: by name"
        );
        assert_eq!(
            moving(&[(&n3, Joining, 5), (&n2, Joining, 9)]),
            Some(("n3".into(), Joining)),
            "a smaller name that started later waits"
        );
        assert_eq!(
            moving(&[(&n2, Joining, 1), (&n4, Leaving, 1), (&n3, Joining, 1)]),
            Some(("n4".into(), Leaving))
        );
        assert_eq!(
            moving(&[
                (&n1, Joining, 1),
                (&n4, Leaving, 1),
                (&n3, JoiningStreamed, 1)
            ]),
            Some(("n3".into(), JoiningStreamed))
        );
    }

    #[test]
    fn steady_rounds_send_only_heartbeats() {
        let (mut a, mut b) = (node(0, 1, vec![]), node(1, 1, vec![]));
        round(&mut a, &mut b, 0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        a.tick(100, &mut rng);
        let ack = b.handle_syn(a.syn(), 100);
        assert!(ack.deltas.is_empty(), "b has nothing newer");
        assert_eq!(ack.requests.len(), 1, "b asks for a's new heartbeat");
        let ack2 = a.handle_ack(ack, 100);
        assert_eq!(ack2.deltas.len(), 1);
        let delta = &ack2.deltas[0];
        assert!(
            delta.vnodes.is_none() && delta.status.is_none(),
            "no vnodes resent: {delta:?}"
        );
    }

    /// Two nodes restarted with what they kept of a third (at different
    /// heartbeats) see it DOWN and in the ring, whatever they tell each
    /// other, until the third itself is heard from.
    #[test]
    fn remembered_peers_are_down_replicas_until_heard_from() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut c = node(2, 1, vec![]);
        let (early, late) = {
            c.tick(100, &mut rng);
            let early = c.endpoints[c.local()].clone();
            for t in 2..10 {
                c.tick(t * 100, &mut rng);
            }
            (early, c.endpoints[c.local()].clone())
        };
        let c_id = c.local().clone();
        let (mut a, mut b) = (node(0, 1, vec![]), node(1, 1, vec![]));
        a.remember(vec![(c_id.clone(), early)]);
        b.remember(vec![(c_id.clone(), late.clone())]);
        for t in 0..5 {
            round(&mut a, &mut b, 2000 + t * 100);
        }
        assert!(!a.is_up(&c_id, 2500) && !b.is_up(&c_id, 2500));
        assert!(a.ring().nodes().contains(&c_id), "still a replica");

        // A peer that did not restart still holds c's real last heartbeat:
        // telling a restarted node about it is no sign of life either.
        let mut d = node(3, 1, vec![]);
        d.remember(vec![(c_id.clone(), late)]);
        let mut e = node(4, 1, vec![]);
        round(&mut e, &mut c, 1000);
        round(&mut d, &mut e, 2600);
        round(&mut d, &mut e, 2700);
        assert!(
            !d.is_up(&c_id, 2700),
            "a stale heartbeat relayed: still DOWN"
        );

        // c taking part in a round with a node that remembers it: the
        // round's delta is its first heartbeat there, and the round itself
        // is the proof of life (the node calls `heard_from`): UP at once.
        c.tick(2800, &mut rng);
        let mut f = node(5, 1, vec![]);
        f.remember(vec![(c_id.clone(), c.endpoints[&c_id].clone())]);
        round(&mut f, &mut c, 2800);
        assert!(
            !f.is_up(&c_id, 2800),
            "a first heartbeat alone proves nothing"
        );
        f.heard_from(&c_id, 2800);
        assert!(f.is_up(&c_id, 2800), "c answered f itself: UP");
        // Heard of through others, twice: UP.
        for t in [2800, 2900] {
            c.tick(t, &mut rng);
            round(&mut e, &mut c, t);
            round(&mut a, &mut e, t);
        }
        assert!(a.is_up(&c_id, 2900), "c's heartbeat advanced twice: UP");
    }

    #[test]
    fn a_local_pause_does_not_convict_peers_but_their_later_silence_does() {
        let (mut a, mut b, mut c) = (node(0, 1, vec![]), node(1, 1, vec![]), node(2, 1, vec![]));
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for t in 0..20 {
            b.tick(t * 100, &mut rng);
            round(&mut a, &mut b, t * 100);
            if t == 0 {
                c.tick(t * 100, &mut rng);
                round(&mut a, &mut c, t * 100);
            }
            assert_eq!(
                a.forgive_local_pause(t * 100),
                None,
                "ticks one interval apart"
            );
        }
        let (b_id, c_id) = (b.local().clone(), c.local().clone());
        assert!(
            !a.is_up(&c_id, 1900),
            "c silent for 19 intervals before the pause"
        );
        // a stops at 1900 ms and runs again at 5900 ms: 40 intervals later.
        let resumed = 5900;
        assert!(
            a.is_up(&b_id, resumed),
            "before the check too, b's silence is a's pause"
        );
        assert!(!a.is_up(&c_id, resumed));
        assert_eq!(a.forgive_local_pause(resumed), Some(3900));
        assert!(a.is_up(&b_id, resumed), "b's silence was a's pause");
        assert!(
            !a.is_up(&c_id, resumed),
            "c was silent before the pause: still DOWN"
        );
        for t in 1..=20 {
            assert_eq!(
                a.forgive_local_pause(resumed + t * 100),
                None,
                "running again"
            );
        }
        assert!(a.is_up(&b_id, resumed + 100 * 17));
        assert!(
            !a.is_up(&b_id, resumed + 100 * 20),
            "b silent after the pause: DOWN"
        );
    }

    #[test]
    fn silence_convicts_and_a_restart_is_seen_up_with_its_new_generation() {
        let (mut a, mut b) = (node(0, 1, vec![]), node(1, 1, vec![]));
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for t in 0..20 {
            b.tick(t * 100, &mut rng);
            round(&mut a, &mut b, t * 100);
        }
        let b_id = b.local().clone();
        assert!(a.is_up(&b_id, 2000));
        assert!(
            !a.is_up(&b_id, 1900 + 100 * 20),
            "silent for 20 intervals: DOWN"
        );
        let mut restarted = node(1, 2, vec![]);
        round(&mut a, &mut restarted, 5000);
        let seen = a
            .members(5000)
            .into_iter()
            .find(|m| m.node == b_id)
            .unwrap();
        assert!(seen.up);
        assert_eq!(seen.generation, 2);
    }

    #[test]
    fn a_lone_node_gossips_to_a_seed_but_not_to_itself() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut alone = node(0, 1, vec![addr(0), addr(5)]);
        let targets: Vec<_> = alone
            .tick(0, &mut rng)
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        assert_eq!(targets, vec![addr(5)]);
        let mut seed_itself = node(0, 1, vec![addr(0)]);
        assert!(seed_itself.tick(0, &mut rng).is_empty());
    }

    #[test]
    fn a_removed_peer_leaves_every_ring_and_the_change_spreads() {
        let (mut a, mut b, mut c) = (node(0, 1, vec![]), node(1, 1, vec![]), node(2, 1, vec![]));
        round(&mut a, &mut b, 0);
        round(&mut c, &mut b, 0);
        round(&mut a, &mut b, 0);
        let c_id = c.local().clone();
        assert_eq!(a.ring().nodes().len(), 3);
        let a_id = a.local().clone();
        assert!(a.remove_peer(&a_id).is_err(), "not itself");
        assert!(a.remove_peer(&NodeId::new("n9")).is_err(), "not a stranger");
        a.remove_peer(&c_id).unwrap();
        assert_eq!(a.status(&c_id), Some(NodeStatus::Left));
        assert!(!a.ring().nodes().contains(&c_id));
        assert!(a.remove_peer(&c_id).is_err(), "not twice");
        round(&mut a, &mut b, 100);
        assert_eq!(b.status(&c_id), Some(NodeStatus::Left), "spread by gossip");
        assert!(!b.ring().nodes().contains(&c_id));
        // c's own later heartbeats (same generation) do not undo it.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        c.tick(200, &mut rng);
        round(&mut c, &mut b, 200);
        assert_eq!(b.status(&c_id), Some(NodeStatus::Left));
        // Restarted (a new generation), c is a member again.
        let mut c2 = node(2, 2, vec![]);
        round(&mut c2, &mut b, 300);
        assert_eq!(b.status(&c_id), Some(NodeStatus::Normal));
        assert!(b.ring().nodes().contains(&c_id));
    }

    #[test]
    fn partial_deltas_never_invent_an_endpoint() {
        let (a, mut b) = (node(0, 1, vec![]), node(1, 1, vec![]));
        let mut partial = a.endpoints[a.local()].delta_after(a.local(), 5);
        partial.heartbeat = 99;
        b.apply(partial, 0);
        assert_eq!(b.members(0).len(), 1);
    }
}
