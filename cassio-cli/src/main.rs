//! `cassio`: run a local cluster (`up`), read and write keys, and show the
//! cluster's status. Errors are printed as sentences with a non-zero exit.

mod bench;
mod scan;
mod shell;
mod status;
mod up;
mod zipf;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cassio_client::{
    ClientConfig, ConsistencyLevel, MoveSummary, Secret, TlsClient, blocking::Client,
};
use clap::{Parser, Subcommand};

/// `cassio up` runs nodes in this process: the same allocator as
/// `cassio-node` (see there).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cassio",
    version,
    about = "cassio: a leaderless, replicated key-value database"
)]
struct Cli {
    /// A node's native-protocol address.
    #[arg(
        long,
        global = true,
        env = "CASSIO_HOST",
        default_value = "127.0.0.1:9000",
        value_parser = cassio_core::net::parse_host_port
    )]
    host: SocketAddr,
    /// Consistency level: ANY, ONE, TWO, THREE, QUORUM, ALL.
    #[arg(
        short = 'c',
        long = "consistency",
        global = true,
        default_value = "QUORUM"
    )]
    consistency: ConsistencyLevel,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// The cluster's password, if it has one (`cassio up`: the one its
    /// nodes require).
    #[arg(long, global = true, env = "CASSIO_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The cluster's CA certificate (PEM), for a cluster whose native port
    /// speaks TLS (nodes started with --tls-ca-cert-file).
    #[arg(long, global = true, env = "CASSIO_TLS_CA_CERT_FILE")]
    tls_ca_cert_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local cluster of N nodes in this process; Ctrl-C stops it.
    Up(up::UpArgs),
    /// Print a key's value ("(nil)" if absent).
    Get { key: String },
    /// Write a key.
    Set {
        key: String,
        value: String,
        /// Expire the value after this many milliseconds (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        ttl_ms: Option<u64>,
    },
    /// Delete a key.
    Del { key: String },
    /// Print live keys in key order, one `key<TAB>value` line each.
    Scan(scan::ScanArgs),
    /// The cluster as the node at --host sees it.
    Status,
    /// Anti-entropy repair: the node at --host compares the keys it shares
    /// with each live peer and they swap what differs.
    Repair {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_s: u64,
    },
    /// Make the node at --host leave the cluster: it streams its data to
    /// the nodes that take its keys over, then stops. Every other node
    /// holding data must be UP.
    Decommission {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_s: u64,
    },
    /// Remove NODE, down for good, from the cluster; every live node then
    /// streams the keys it replicated with NODE to their new replicas.
    Removenode {
        /// The node's name, as `cassio status` shows it.
        node: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_s: u64,
    },
    /// Make the node at --host drop the keys it no longer replicates (left
    /// over from before nodes joined): run it on each older node once a
    /// join is done. Refused while a node joins or leaves or one is DOWN.
    Cleanup {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_s: u64,
    },
    /// Exit 0 if the node at --host is NORMAL (a full member), 1 if it is
    /// JOINING, LEAVING or unreachable: a readiness probe.
    Ready,
    /// An interactive shell with history.
    Shell,
    /// YCSB core workloads with latency percentiles.
    Bench(bench::BenchArgs),
}

/// How the CLI's clients talk to the cluster: its level, password and CA.
fn connect_config(cli: &Cli) -> anyhow::Result<ClientConfig> {
    let tls = cli
        .tls_ca_cert_file
        .as_deref()
        .map(TlsClient::from_ca_cert_file)
        .transpose()?;
    Ok(ClientConfig {
        consistency: cli.consistency,
        password: cli.password.clone().map(Secret::new),
        tls,
        ..ClientConfig::default()
    })
}

fn connect(cli: &Cli) -> anyhow::Result<Client> {
    match Client::connect(&[cli.host], connect_config(cli)?) {
        Ok(client) => Ok(client),
        // A node answered, and said why not (a password, TLS, say).
        Err(
            refused @ cassio_client::Error::Transport(
                cassio_core::Error::HandshakeRefused { .. } | cassio_core::Error::Tls { .. },
            ),
        ) => Err(refused.into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot reach a cassio node at {} (is one running? `cassio up` starts a local cluster)",
            cli.host
        ))),
    }
}

/// What a decommission or removal did, as a line (or JSON) and warnings.
fn print_move(cli: &Cli, summary: &MoveSummary, what: &str) -> anyhow::Result<()> {
    if cli.json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    let streamed = &summary.streamed;
    println!(
        "{} {what}: {} node(s) sent {} cell(s) to the nodes that took its keys over",
        summary.node,
        summary.streamed_from.len(),
        streamed.cells_streamed
    );
    for failure in &summary.failed {
        println!("warning: {failure}");
    }
    if summary.peers_unconfirmed > 0 {
        println!(
            "warning: {} live node(s) had not seen it leave yet; they will through gossip",
            summary.peers_unconfirmed
        );
    }
    Ok(())
}

fn json_string(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Up(args) => up::run(args, cli.password.clone().map(Secret::new)),
        Command::Get { key } => {
            let client = connect(&cli)?;
            let value = client.get_versioned(key.as_bytes(), Some(cli.consistency))?;
            let mut out = std::io::stdout().lock();
            match (value, cli.json) {
                (Some(v), false) => {
                    out.write_all(&v.value)?;
                    out.write_all(b"\n")?;
                }
                (None, false) => writeln!(out, "(nil)")?,
                (Some(v), true) => writeln!(
                    out,
                    r#"{{"key":{},"value":{},"timestamp":{}}}"#,
                    json_string(key.as_bytes()),
                    json_string(&v.value),
                    v.timestamp
                )?,
                (None, true) => writeln!(
                    out,
                    r#"{{"key":{},"value":null}}"#,
                    json_string(key.as_bytes())
                )?,
            }
            Ok(())
        }
        Command::Set { key, value, ttl_ms } => {
            let client = connect(&cli)?;
            let ttl = ttl_ms.map(Duration::from_millis);
            let timestamp =
                client.set_with(key.as_bytes(), value.as_bytes(), Some(cli.consistency), ttl)?;
            if cli.json {
                println!(
                    r#"{{"key":{},"written":true,"timestamp":{timestamp}}}"#,
                    json_string(key.as_bytes())
                );
            } else {
                println!("OK");
            }
            Ok(())
        }
        Command::Del { key } => {
            let client = connect(&cli)?;
            let timestamp = client.delete(key.as_bytes(), Some(cli.consistency))?;
            if cli.json {
                println!(
                    r#"{{"key":{},"deleted":true,"timestamp":{timestamp}}}"#,
                    json_string(key.as_bytes())
                );
            } else {
                println!("OK");
            }
            Ok(())
        }
        Command::Scan(args) => scan::run(&connect(&cli)?, args, cli.consistency, cli.json),
        Command::Shell => {
            let client = connect(&cli)?;
            shell::run(&client, &cli.host.to_string(), cli.consistency)
        }
        Command::Bench(args) => bench::run(args, &connect_config(&cli)?, cli.host, cli.json),
        Command::Repair { timeout_s } => {
            let client = connect(&cli)?;
            let summary = client.repair(std::time::Duration::from_secs(*timeout_s))?;
            if cli.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "repaired {} against {} peer(s) ({} down, skipped): {} range(s) compared, {} differed; {} page(s) swapped, {} cell(s) sent, {} received",
                    cli.host,
                    summary.peers,
                    summary.peers_down,
                    summary.ranges,
                    summary.ranges_differing,
                    summary.pages,
                    summary.cells_sent,
                    summary.cells_received
                );
            }
            Ok(())
        }
        Command::Decommission { timeout_s } => {
            let client = connect(&cli)?;
            let summary = client.decommission(std::time::Duration::from_secs(*timeout_s))?;
            print_move(&cli, &summary, "left the cluster and stops")
        }
        Command::Cleanup { timeout_s } => {
            let client = connect(&cli)?;
            let summary = client.cleanup(std::time::Duration::from_secs(*timeout_s))?;
            if cli.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "cleaned up {} ({}): dropped {} key(s) it does not replicate; SSTables {} -> {} bytes",
                    summary.node,
                    cli.host,
                    summary.keys_dropped,
                    summary.sstable_bytes_before,
                    summary.sstable_bytes_after
                );
            }
            Ok(())
        }
        Command::Removenode { node, timeout_s } => {
            let client = connect(&cli)?;
            let timeout = std::time::Duration::from_secs(*timeout_s);
            let summary = client.remove_node(node, timeout)?;
            print_move(&cli, &summary, "was removed")?;
            anyhow::ensure!(
                summary.failed.is_empty(),
                "some nodes could not send their keys; run `cassio removenode {node}` again once they are UP"
            );
            Ok(())
        }
        Command::Ready => {
            let status = connect(&cli)?.status()?;
            let ready = status.readiness().map_err(anyhow::Error::msg)?;
            println!("{ready}");
            Ok(())
        }
        Command::Status => {
            let client = connect(&cli)?;
            let status = client.status()?;
            if cli.json {
                println!("{}", status::json(&status));
            } else {
                print!("{}", status::table(&status));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cassio: {}", cassio_core::error::describe(e.as_ref()));
            ExitCode::from(1)
        }
    }
}
