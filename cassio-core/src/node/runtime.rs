//! A node's life on an async runtime, generic over the transport so the same
//! code serves real TCP and the simulated network: open storage and vnodes,
//! bind, announce readiness, then serve requests and gossip until shutdown,
//! and finally flush storage.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use tokio::sync::watch;

use super::config::NodeConfig;
use super::hints::HintStore;
use super::join::Join;
use super::peers_file;
use super::repair_schedule::RepairSchedule;
use super::shared::NodeShared;
use super::workers::ClientThreads;
use crate::cluster::{GossipConfig, Gossiper, LocalEndpoint, NodeStatus};
use crate::error::{Error, Result};
use crate::net::{ServerConfig, TlsFiles, Transport};
use crate::ring::load_or_create_vnodes;
use crate::storage::{Clock, Engine};
use crate::types::NodeId;

/// Ticks between two load announcements in gossip.
const LOAD_EVERY_TICKS: u64 = 10;

/// Gossip ticks a restarted node waits to hear from a peer before it
/// coordinates with the ring it kept on disk (every peer down).
const JOIN_WAIT_TICKS: u64 = 5;

/// A node's generation: its start time in ms, but always above the one it
/// used last (kept in the data directory), so peers see a restart even if
/// the clock went back.
pub fn next_generation(data_dir: &Path, now_ms: u64) -> Result<u64> {
    crate::storage::create_dir(data_dir)?;
    let path = data_dir.join("generation");
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::io(&path, e)),
    };
    let generation = now_ms.max(last + 1);
    crate::storage::write_atomically(&path, generation.to_string().as_bytes())?;
    Ok(generation)
}

/// What a node takes from its surroundings rather than reading itself, so a
/// simulation can control it.
#[derive(Clone)]
pub struct NodeEnv {
    /// See [`next_generation`].
    pub generation: u64,
    /// Seeds gossip's peer choice and the first vnode draw.
    pub rng_seed: u64,
    /// Wall clock in ms since the Unix epoch (write timestamps, TTLs, hints).
    pub clock: Clock,
    /// Serve RESP connections on `config.client_threads` threads of their
    /// own; off in simulations, which must stay on one thread.
    pub client_threads: bool,
}

/// Binds `addr`; the listener and the address it bound (port 0 picks
/// one). `what` names it in the error.
async fn bind_listener<T: Transport>(
    transport: &T,
    addr: SocketAddr,
    what: String,
) -> Result<(T::Listener, SocketAddr)> {
    let listener = transport
        .bind(addr)
        .await
        .map_err(|e| Error::io(what.clone(), e))?;
    let bound = transport
        .local_addr(&listener)
        .map_err(|e| Error::io(what, e))?;
    Ok((listener, bound))
}

/// Runs one node until `shutdown` turns true. `on_ready` receives the shared
/// state once the node listens (its bound address may differ from the
/// configured one when the port was 0).
pub(crate) async fn run_node<T: Transport>(
    config: NodeConfig,
    transport: T,
    env: NodeEnv,
    mut shutdown: watch::Receiver<bool>,
    on_ready: impl FnOnce(Arc<NodeShared<T>>),
) -> Result<()> {
    config.validate()?;
    let NodeEnv {
        generation,
        rng_seed,
        clock,
        client_threads,
    } = env;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);
    // Unreadable or mismatched TLS files stop the start here, before the
    // engine opens or a port is bound.
    let tls = config.tls.as_ref().map(TlsFiles::load).transpose()?;
    // The native port speaks TLS once the cluster's CA is given.
    let (native_tls, peer_tls) = match tls.as_ref().and_then(|tls| tls.native.clone()) {
        Some((server, client)) => (Some(server), Some(client)),
        None => (None, None),
    };
    if native_tls.is_some() && config.password.is_none() {
        tracing::warn!(
            "the native port speaks TLS but asks no password: peers must show the cluster's certificates, but any host can connect as a client; set a password (--password)"
        );
    }
    let data_dir = config.data_dir();
    crate::storage::create_dir(&data_dir)?;
    if let Some(refusal) = super::leave::left_marker_refusal(&data_dir, &config.name) {
        return Err(refusal);
    }
    let engine =
        Engine::open_with_clock(data_dir.join("data"), config.storage.clone(), clock.clone())?;
    let hints = if config.hinted_handoff {
        Some(HintStore::open(
            &data_dir.join("hints"),
            config.hint_window_ms,
            config.hints_bytes_max,
            config.storage.background_threads,
            clock.clone(),
        )?)
    } else {
        None
    };
    let vnodes = load_or_create_vnodes(&data_dir, config.vnodes as usize, &mut rng)?;
    let (listener, bound_addr) =
        bind_listener(&transport, config.listen, config.listen.to_string()).await?;
    let native_addr = config.announced_native(bound_addr);
    let resp_listener = match config.resp {
        Some(addr) => {
            let (listener, bound) =
                bind_listener(&transport, addr, format!("RESP listener {addr}")).await?;
            Some((listener, NodeConfig::announced_resp(bound, native_addr)))
        }
        None => None,
    };
    let http_listener = match config.http {
        Some(addr) => Some(bind_listener(&transport, addr, format!("HTTP listener {addr}")).await?),
        None => None,
    };
    let node_id = NodeId::new(config.name.clone());
    let mut known_peers = peers_file::load(&data_dir)?;
    known_peers.states.retain(|(name, _)| *name != node_id);
    known_peers.addresses.retain(|(name, _)| *name != node_id);
    let is_self = |addr: &std::net::SocketAddr| {
        *addr == native_addr || *addr == bound_addr || *addr == config.listen
    };
    // Alone only if it never knew a peer and its seeds are itself: the first
    // node of a new cluster. Anyone else first tries to hear from a peer.
    let alone = known_peers.is_empty() && config.seeds.iter().all(is_self);
    let ring_on_disk = !known_peers.states.is_empty();
    // New: no data, no peer ever known, and not a seed of its own (a seed
    // starts a cluster, as Cassandra's seeds do not bootstrap).
    let stats = engine.stats();
    let storage_empty = stats.sstable_entries == 0 && stats.memtable_entries == 0;
    // A join cut short by a restart goes on (its marker stays until it is
    // NORMAL).
    let new_node = config.bootstrap
        && storage_empty
        && known_peers.is_empty()
        && !alone
        && !config.seeds.iter().any(is_self);
    // The join's phase, for a node that joins.
    let joining = match new_node {
        true => Some(NodeStatus::Joining),
        false => config
            .bootstrap
            .then(|| super::join::interrupted(&data_dir))
            .flatten(),
    };
    let mut contacts = config.seeds.clone();
    for addr in known_peers.contacts() {
        if !is_self(&addr) && !contacts.contains(&addr) {
            contacts.push(addr);
        }
    }
    let others: Vec<std::net::SocketAddr> =
        contacts.iter().filter(|a| !is_self(a)).copied().collect();
    let mut gossiper = Gossiper::new(
        LocalEndpoint {
            node: node_id.clone(),
            generation,
            native_addr,
            resp_addr: resp_listener.as_ref().map(|(_, announced)| *announced),
            vnodes,
            status: joining.unwrap_or(NodeStatus::Normal),
        },
        GossipConfig {
            interval_ms: config.gossip_interval_ms,
            phi_convict_threshold: config.phi_convict_threshold,
            seeds: contacts,
        },
    );
    gossiper.remember(known_peers.states);
    let shared = Arc::new(
        NodeShared::new(
            config.clone(),
            native_addr,
            gossiper,
            engine,
            hints,
            transport.clone(),
            clock,
        )
        .with_peer_tls(peer_tls),
    );
    tracing::info!(node = %node_id, %native_addr, %bound_addr, generation, "node listening");
    shared.check_identity(&others, new_node).await?;
    if let Some(phase) = joining {
        super::join::mark(&data_dir, phase)?;
    }
    let server_config = Arc::new(ServerConfig {
        cluster_name: config.cluster_name.clone(),
        node_id: node_id.clone(),
        frame_bytes_max: config.frame_bytes_max,
        in_flight_per_connection_max: 256,
        handshake_timeout: Duration::from_secs(5),
        password: config.password.clone(),
        clients: shared.client_connections.clone(),
        tls: native_tls,
    });
    let server = tokio::spawn(crate::net::serve(
        transport.clone(),
        listener,
        shared.clone(),
        server_config,
        shutdown.clone(),
    ));
    if alone {
        shared.joined.send_replace(true);
    }
    let client_threads = match (client_threads, config.client_threads, &resp_listener) {
        (true, count, Some(_)) if count > 0 => {
            Some(Arc::new(ClientThreads::start(count, &config.name)?))
        }
        _ => None,
    };
    let resp_server = resp_listener.map(|(listener, announced)| {
        tracing::info!(node = %node_id, resp_addr = %announced, "serving the Redis protocol");
        *shared.resp_addr.lock() = Some(announced);
        tokio::spawn(crate::resp::server::serve(
            transport.clone(),
            listener,
            shared.clone(),
            shutdown.clone(),
            client_threads.clone(),
            tls.map(|tls| tls.resp),
        ))
    });
    let http_server = http_listener.map(|(listener, bound)| {
        tracing::info!(node = %node_id, http_addr = %bound, "serving metrics and probes over HTTP");
        *shared.http_addr.lock() = Some(bound);
        tokio::spawn(crate::http::serve(
            transport.clone(),
            listener,
            shared.clone(),
            shutdown.clone(),
        ))
    });
    on_ready(shared.clone());

    let mut ticks = tokio::time::interval(Duration::from_millis(config.gossip_interval_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick_count = 0u64;
    let mut persisted_peers = shared.gossiper.lock().peers_fingerprint();
    // Each peer's last seen liveness, to log changes.
    let mut peers_up = std::collections::BTreeMap::new();
    let mut repairs = RepairSchedule::new(&config, shared.now_ms(), &mut rng);
    let mut join = Join::new(config.gossip_interval_ms, data_dir.clone());
    if joining.is_some() {
        tracing::info!(node = %node_id, "new node: JOINING until the nodes holding data have streamed its keys");
    }
    let mut left = shared.left.subscribe();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            _ = left.wait_for(|left| *left) => break,
            _ = ticks.tick() => {}
        }
        if let Some(paused_ms) = shared.gossiper.lock().forgive_local_pause(shared.now_ms()) {
            tracing::warn!(
                paused_ms,
                "this node did not run for a while: peers' silence meanwhile is not held against them"
            );
        }
        tick_count += 1;
        if tick_count == 1 || tick_count.is_multiple_of(LOAD_EVERY_TICKS) {
            let stats = shared.engine.stats();
            shared
                .gossiper
                .lock()
                .set_load(stats.sstable_bytes + stats.memtable_bytes as u64);
        }
        for member in shared.members() {
            let (peer, addr) = (&member.node, member.native_addr);
            match (peers_up.get(peer), member.up) {
                _ if *peer == node_id => continue,
                (Some(true), true) | (Some(false), false) => continue,
                (Some(true), false) => tracing::warn!(%peer, %addr, "peer is DOWN"),
                (_, true) => tracing::info!(%peer, %addr, "peer is UP"),
                (None, false) => tracing::info!(%peer, %addr, "peer is DOWN until heard from"),
            }
            peers_up.insert(member.node, member.up);
        }
        let fingerprint = shared.gossiper.lock().peers_fingerprint();
        if fingerprint != persisted_peers {
            let states = shared.gossiper.lock().peer_states();
            if let Err(e) = peers_file::store(&data_dir, &states) {
                tracing::warn!(error = %e, "cannot record known peers");
            }
            persisted_peers = fingerprint;
        }
        if ring_on_disk && tick_count == JOIN_WAIT_TICKS && !*shared.joined.borrow() {
            tracing::warn!(
                ticks = JOIN_WAIT_TICKS,
                "no peer answered gossip; coordinating with the ring known before the restart (peers are down until heard from)"
            );
            shared.joined.send_replace(true);
        }
        shared.replay_hints();
        let status = shared.gossiper.lock().status(&node_id);
        match status {
            Some(NodeStatus::Joining) => join.start_if_due(&shared),
            Some(NodeStatus::JoiningStreamed) => join.finish_if_restarted(&shared),
            _ => {}
        }
        repairs.start_if_due(&shared);
        let rounds = shared.gossiper.lock().tick(shared.now_ms(), &mut rng);
        for (addr, syn) in rounds {
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = shared.gossip_with(addr, syn).await {
                    tracing::debug!(peer = %addr, error = %e, "gossip round failed");
                }
            });
        }
    }
    server.abort();
    repairs.stop(&shared);
    join.stop();
    for listener in [resp_server, http_server].into_iter().flatten() {
        listener.abort();
    }
    // Late replies, hints and repairs of answered requests finish first:
    // they are bounded by the request timeouts.
    let limit = Duration::from_millis(2 * config.write_timeout_ms.max(config.read_timeout_ms));
    if !shared.background.wait_idle(limit).await {
        tracing::warn!("stopping with coordinator work still running");
    }
    if let Some(threads) = client_threads {
        threads.stop().await;
    }
    tracing::info!(node = %node_id, "node stopping; flushing storage");
    if let Some(hints) = &shared.hints {
        hints.flush()?;
    }
    shared.engine.flush()
}
