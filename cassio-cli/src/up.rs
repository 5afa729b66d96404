//! `cassio up`: N embedded nodes in this process (`Node::start`, exactly as
//! the embedding API offers), on consecutive loopback ports, until Ctrl-C.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use cassio_core::types::Secret;
use cassio_core::{Node, NodeConfig, NodeHandle};

#[derive(clap::Args, Debug)]
pub(crate) struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Parent of the nodes' data directories (node1, node2, ...).
    #[arg(long, default_value = "cassio-data")]
    data_dir: PathBuf,
    /// Native port of the first node; node i listens on base + i.
    #[arg(long, default_value_t = 9000)]
    base_port: u16,
    /// RESP port of the first node; node i serves Redis on base + i.
    #[arg(long, default_value_t = 6379)]
    resp_base_port: u16,
    /// HTTP port of the first node (metrics and probes); node i serves
    /// on base + i [default: no HTTP].
    #[arg(long)]
    http_base_port: Option<u16>,
    /// Copies of each key [default: min(3, nodes)].
    #[arg(long)]
    replication_factor: Option<u32>,
}

/// Runs the cluster; with `password`, every node requires it.
pub(crate) fn run(args: &UpArgs, password: Option<Secret>) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=64).contains(&args.nodes),
        "--nodes must be between 1 and 64, got {}",
        args.nodes
    );
    let log_filter = std::env::var("CASSIO_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    let replication_factor = args
        .replication_factor
        .unwrap_or(u32::from(args.nodes.min(3)));
    anyhow::ensure!(
        (1..=u32::from(args.nodes)).contains(&replication_factor),
        "--replication-factor must be between 1 and --nodes ({}): each node holds at most one copy of a key, got {replication_factor}",
        args.nodes
    );
    // Every node of this process holds its connections and tables here.
    if let Err(e) = cassio_core::node::raise_open_files_limit() {
        eprintln!("cassio up: cannot raise the open-file limit: {e}");
    }
    let seed = std::net::SocketAddr::from(([127, 0, 0, 1], args.base_port));
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..args.nodes {
        let name = format!("node{}", i + 1);
        let port = args
            .base_port
            .checked_add(i)
            .context("--base-port too high for that many nodes")?;
        let resp_port = args
            .resp_base_port
            .checked_add(i)
            .context("--resp-base-port too high")?;
        let http_port = match args.http_base_port {
            Some(base) => Some(base.checked_add(i).context("--http-base-port too high")?),
            None => None,
        };
        let config = NodeConfig {
            name: name.clone(),
            listen: ([127, 0, 0, 1], port).into(),
            resp: Some(([127, 0, 0, 1], resp_port).into()),
            http: http_port.map(|port| ([127, 0, 0, 1], port).into()),
            seeds: vec![seed],
            data_dir: Some(args.data_dir.join(&name)),
            replication_factor,
            password: password.clone(),
            // A new cluster: its nodes start empty, with nothing to stream.
            bootstrap: false,
            ..NodeConfig::default()
        };
        let node = Node::start(config).map_err(|e| {
            let port_taken = matches!(&e, cassio_core::Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::AddrInUse);
            let error = anyhow::Error::new(e).context(format!("cannot start {name} on 127.0.0.1:{port}"));
            match port_taken {
                true => error.context(
                    "a port is taken (another cassio, or a redis-server on 6379?): choose free ones with --base-port, --resp-base-port (and --http-base-port)",
                ),
                false => error,
            }
        })?;
        nodes.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !nodes
        .iter()
        .all(|n| n.members().iter().filter(|m| m.up).count() == nodes.len())
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes did not see each other within 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    print!("{}", crate::status::table(&nodes[0].cluster_status()));
    // The CLI's default host is the first node on the default port.
    let mut host = match args.base_port {
        9000 => String::new(),
        port => format!("--host 127.0.0.1:{port} "),
    };
    let mut redis_auth = String::new();
    if password.is_some() {
        // Named, not shown: the banner may be logged.
        host.push_str("--password ... ");
        redis_auth.push_str("-a ... ");
    }
    let metrics = match args.http_base_port {
        Some(port) => format!("  curl http://127.0.0.1:{port}/metrics\n"),
        None => String::new(),
    };
    println!(
        "\n{count} node{s} up (data in {data}). Try:\n  cassio {host}set greeting hello\n  cassio {host}get greeting\n  cassio {host}status\n  redis-cli -p {resp} {redis_auth}set a b\n{metrics}Ctrl-C stops the cluster (storage is flushed).",
        count = nodes.len(),
        s = if nodes.len() == 1 { "" } else { "s" },
        data = args.data_dir.display(),
        resp = args.resp_base_port
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => {}
            result = tokio::signal::ctrl_c() => result?,
        }
        Ok::<_, std::io::Error>(())
    })?;
    println!("stopping {} nodes...", nodes.len());
    for node in nodes {
        node.shutdown()?;
    }
    Ok(())
}
