//! `cassio-node`: the daemon. It reads a TOML config file (optional), then
//! `CASSIO_*` environment variables and flags on top (flags win), validates,
//! starts one node and serves until SIGTERM or SIGINT, then shuts down
//! gracefully (storage flushed).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cassio_core::error::describe;
use cassio_core::net::{TlsFiles, parse_host_port};
use cassio_core::node::{open_files_shortfall, raise_open_files_limit};
use cassio_core::types::Secret;
use cassio_core::{Node, NodeConfig};
use clap::{Parser, ValueEnum};

/// A request allocates a dozen small buffers (keys, cells, messages) that
/// live for microseconds; mimalloc serves them from per-thread pages where
/// glibc's malloc spent a fifth of a node's time (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "cassio-node", version, about = "Run one cassio database node")]
struct Args {
    /// TOML file with any of the settings below (flag names with `_`).
    #[arg(long, env = "CASSIO_CONFIG")]
    config: Option<PathBuf>,
    /// This node's name, unique in the cluster [default: node1].
    #[arg(long, env = "CASSIO_NAME")]
    name: Option<String>,
    /// Nodes only join nodes of the same cluster name [default: cassio].
    #[arg(long, env = "CASSIO_CLUSTER_NAME")]
    cluster_name: Option<String>,
    /// Password every client and peer must give (Redis clients with AUTH);
    /// the same on every node. Prefer the environment variable or the
    /// config file: a flag shows in the process list [default: none].
    #[arg(long, env = "CASSIO_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Native protocol address [default: 127.0.0.1:9000].
    #[arg(long, env = "CASSIO_LISTEN", value_parser = parse_host_port)]
    listen: Option<SocketAddr>,
    /// Native address peers and clients reach this node at, when it is not
    /// the --listen address (0.0.0.0, NAT) [default: the bound --listen].
    #[arg(long, env = "CASSIO_BROADCAST", value_parser = parse_host_port)]
    broadcast: Option<SocketAddr>,
    /// Redis-protocol address [default: 127.0.0.1:6379].
    #[arg(long, env = "CASSIO_RESP", value_parser = parse_host_port)]
    resp: Option<SocketAddr>,
    /// HTTP address for Prometheus metrics (/metrics) and probes (/health,
    /// /ready); it serves no data and asks no password [default: off].
    #[arg(long, env = "CASSIO_HTTP", value_parser = parse_host_port)]
    http: Option<SocketAddr>,
    /// Native addresses (host:port) of nodes to join through, comma-separated.
    /// A host name that does not resolve yet (a Kubernetes pod's DNS
    /// record, say) is retried for up to 60 s.
    #[arg(long, env = "CASSIO_SEEDS", value_delimiter = ',', value_parser = host_and_port)]
    seeds: Option<Vec<String>>,
    /// Data directory [default: ./cassio-data/NAME].
    #[arg(long, env = "CASSIO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Copies of each key [default: 3].
    #[arg(long, env = "CASSIO_REPLICATION_FACTOR")]
    replication_factor: Option<u32>,
    /// Placement vectors, fixed at first start [default: 256].
    #[arg(long, env = "CASSIO_VNODES")]
    vnodes: Option<u32>,
    /// Gossip period in milliseconds [default: 1000].
    #[arg(long, env = "CASSIO_GOSSIP_INTERVAL_MS")]
    gossip_interval_ms: Option<u64>,
    /// Phi above which a peer is DOWN [default: 8].
    #[arg(long, env = "CASSIO_PHI_CONVICT_THRESHOLD")]
    phi_convict_threshold: Option<f64>,
    /// Threads serving Redis-protocol connections (0: the node's own
    /// thread) [default: one per core, at most 8].
    #[arg(long, env = "CASSIO_CLIENT_THREADS")]
    client_threads: Option<usize>,
    /// Client connections (Redis-protocol and native; peers do not count)
    /// open at once at most; more are refused [default: 10000].
    #[arg(long, env = "CASSIO_MAX_CLIENTS")]
    max_clients: Option<usize>,
    /// PEM certificate chain for the Redis-protocol port, which then speaks
    /// only TLS; needs --tls-key-file [default: no TLS].
    #[arg(long, env = "CASSIO_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "CASSIO_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// PEM certificate of the CA that signed every node's certificate: the
    /// native port (peers, cassio clients) then speaks TLS too, and peers'
    /// certificates are checked against it [default: native port in plain
    /// text].
    #[arg(long, env = "CASSIO_TLS_CA_CERT_FILE")]
    tls_ca_cert_file: Option<PathBuf>,
    /// Read and validate the configuration, print it as TOML, and exit
    /// (status 2 and the reason if it is not valid).
    #[arg(long)]
    check_config: bool,
    /// Log format.
    #[arg(long, env = "CASSIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `cassio_core=debug`.
    #[arg(long, env = "CASSIO_LOG", default_value = "info")]
    log: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// Defaults, then the file, then environment and flags.
    fn node_config(&self) -> anyhow::Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<NodeConfig>(&text)
                    .with_context(|| format!("config file {} is not valid", path.display()))?
            }
            None => NodeConfig::default(),
        };
        if let Some(v) = &self.name {
            config.name = v.clone();
        }
        if let Some(v) = &self.cluster_name {
            config.cluster_name = v.clone();
        }
        if let Some(v) = &self.password {
            config.password = Some(Secret::new(v.clone()));
        }
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.broadcast {
            config.broadcast = Some(v);
        }
        if let Some(v) = self.resp {
            config.resp = Some(v);
        }
        if let Some(v) = self.http {
            config.http = Some(v);
        }
        if let Some(v) = &self.seeds {
            config.seeds = resolve_seeds(v, SEED_RESOLVE_WAIT, parse_host_port)?;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = Some(v.clone());
        }
        if let Some(v) = self.replication_factor {
            config.replication_factor = v;
        }
        if let Some(v) = self.vnodes {
            config.vnodes = v;
        }
        if let Some(v) = self.gossip_interval_ms {
            config.gossip_interval_ms = v;
        }
        if let Some(v) = self.phi_convict_threshold {
            config.phi_convict_threshold = v;
        }
        if let Some(v) = self.client_threads {
            config.client_threads = v;
        }
        if let Some(v) = self.max_clients {
            config.max_clients = v;
        }
        config.tls = match (&self.tls_cert_file, &self.tls_key_file, config.tls) {
            (None, None, tls) => tls,
            (Some(cert_file), Some(key_file), tls) => Some(TlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                ca_cert_file: tls.and_then(|tls| tls.ca_cert_file),
            }),
            // One of the two flags over a config file's [tls]: it replaces
            // that file.
            (cert, key, Some(tls)) => Some(TlsFiles {
                cert_file: cert.clone().unwrap_or(tls.cert_file),
                key_file: key.clone().unwrap_or(tls.key_file),
                ca_cert_file: tls.ca_cert_file,
            }),
            (Some(_), None, None) => {
                anyhow::bail!(
                    "--tls-cert-file needs --tls-key-file (the certificate's private key)"
                )
            }
            (None, Some(_), None) => {
                anyhow::bail!(
                    "--tls-key-file needs --tls-cert-file (the certificate it is the key of)"
                )
            }
        };
        if let Some(ca) = &self.tls_ca_cert_file {
            match &mut config.tls {
                Some(tls) => tls.ca_cert_file = Some(ca.clone()),
                None => anyhow::bail!(
                    "--tls-ca-cert-file needs --tls-cert-file and --tls-key-file (this node's own certificate and key)"
                ),
            }
        }
        config.validate()?;
        Ok(config)
    }
}

/// How long seeds' host names are retried before the node starts without
/// those that do not resolve.
const SEED_RESOLVE_WAIT: Duration = Duration::from_secs(60);

/// `HOST:PORT` in form (resolved later, by [`resolve_seeds`]).
fn host_and_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(format!("{text:?} is not HOST:PORT")),
    }
}

/// Resolves every seed, retrying those that fail once a second for up to
/// `wait`. Then the node starts with the seeds that resolved, warning about
/// the others; if none did, it does not start. A seed's DNS name can lag
/// behind the seed itself, as a Kubernetes pod's record does its start.
fn resolve_seeds(
    texts: &[String],
    wait: Duration,
    resolve: impl Fn(&str) -> Result<SocketAddr, String>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let deadline = Instant::now() + wait;
    let mut resolved: Vec<Option<SocketAddr>> = vec![None; texts.len()];
    loop {
        let mut failures = Vec::new();
        for (text, slot) in texts.iter().zip(&mut resolved) {
            if slot.is_none() {
                match resolve(text) {
                    Ok(addr) => *slot = Some(addr),
                    Err(e) => failures.push(e),
                }
            }
        }
        if failures.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            if resolved.iter().all(Option::is_none) {
                anyhow::bail!(
                    "no seed resolved within {} s: {}",
                    wait.as_secs(),
                    failures.join("; ")
                );
            }
            for failure in &failures {
                tracing::warn!(%failure, "starting without this seed");
            }
            break;
        }
        tracing::info!(
            unresolved = %failures.join("; "),
            "waiting for seeds to resolve"
        );
        std::thread::sleep(Duration::from_secs(1).min(wait));
    }
    Ok(resolved.into_iter().flatten().collect())
}

fn init_logging(args: &Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("--log {:?} is not a valid log filter", args.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.node_config()?;
    if args.check_config {
        // The files are read, as the node would at start.
        if let Some(tls) = &config.tls {
            tls.check()?;
        }
        // The password is not printed: the output may end up in logs.
        let shown = NodeConfig {
            password: None,
            ..config.clone()
        };
        if config.password.is_some() {
            println!("# password = (set, not shown)");
        }
        print!(
            "{}",
            toml::to_string(&shown).context("cannot print the configuration")?
        );
        return Ok(());
    }
    match raise_open_files_limit() {
        Ok(Some(limit)) => {
            if let Some(warning) = open_files_shortfall(limit, config.max_clients) {
                tracing::warn!("{warning}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let node = Node::start(config.clone())
        .with_context(|| format!("node {} failed to start", config.name))?;
    // One line on stdout for scripts and tests: who listens where.
    println!(
        "cassio-node {} listening on {} (cluster {}, data {})",
        node.node_id(),
        node.native_addr(),
        config.cluster_name,
        config.data_dir().display()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    let mut left = node.left();
    let reason = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => Ok::<_, std::io::Error>("SIGTERM"),
            result = tokio::signal::ctrl_c() => result.map(|()| "SIGINT"),
            _ = left.wait_for(|left| *left) => Ok("left the cluster"),
        }
    })?;
    tracing::info!(reason, "shutting down");
    node.shutdown().context("shutdown failed")?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("cassio-node: {}", describe(e.as_ref()));
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cassio-node: {}", describe(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_core::coordinator::ConsistencyLevel;

    fn config_from_file(text: &str) -> anyhow::Result<NodeConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cassio.toml");
        std::fs::write(&path, text)?;
        let args = Args::try_parse_from(["cassio-node", "--config", path.to_str().unwrap()])?;
        args.node_config()
    }

    #[test]
    fn seeds_that_do_not_resolve_yet_are_waited_for() {
        let texts: Vec<String> = ["late.test:9000", "never.test:9000"]
            .map(String::from)
            .to_vec();
        let calls = std::cell::Cell::new(0);
        // "late" resolves on the third try; "never" never does.
        let resolve = |text: &str| {
            calls.set(calls.get() + 1);
            match text {
                "late.test:9000" if calls.get() >= 5 => Ok("10.0.0.1:9000".parse().unwrap()),
                _ => Err(format!("{text} does not resolve")),
            }
        };
        let seeds = resolve_seeds(&texts, Duration::from_millis(2500), resolve).unwrap();
        assert_eq!(seeds, vec!["10.0.0.1:9000".parse().unwrap()]);

        let none = resolve_seeds(&texts[1..], Duration::ZERO, |t: &str| {
            Err(format!("{t} does not resolve"))
        })
        .unwrap_err();
        assert_eq!(
            none.to_string(),
            "no seed resolved within 0 s: never.test:9000 does not resolve"
        );
        assert!(host_and_port("db1").unwrap_err().contains("not HOST:PORT"));
        assert!(host_and_port(":9000").is_err() && host_and_port("db1:99999").is_err());
        assert_eq!(host_and_port("db1:9000").unwrap(), "db1:9000");
    }

    #[test]
    fn config_files_name_hosts_and_levels_as_users_write_them() {
        let config = config_from_file(
            "listen = \"0.0.0.0:9000\"\nbroadcast = \"localhost:9000\"\nseeds = [\"localhost:9001\", \"127.0.0.2:9002\"]\n",
        )
        .unwrap();
        assert_eq!(config.broadcast, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(
            config.seeds,
            vec![
                "127.0.0.1:9001".parse().unwrap(),
                "127.0.0.2:9002".parse().unwrap()
            ]
        );

        let levels =
            config_from_file("read_consistency = \"ONE\"\nwrite_consistency = \"All\"\n").unwrap();
        assert_eq!(levels.read_consistency, ConsistencyLevel::One);
        assert_eq!(levels.write_consistency, ConsistencyLevel::All);

        let unknown = config_from_file("seeds = [\"no-such-host.invalid:9000\"]\n").unwrap_err();
        assert!(
            format!("{unknown:#}").contains("no-such-host.invalid:9000"),
            "{unknown:#}"
        );
        let everywhere = config_from_file("listen = \"0.0.0.0:9000\"\n").unwrap_err();
        assert!(
            format!("{everywhere:#}").contains("--broadcast"),
            "{everywhere:#}"
        );
    }

    #[test]
    fn tls_files_come_from_the_file_or_both_flags() {
        let from_file = config_from_file(
            "[tls]\ncert_file = \"/etc/cassio/node.crt\"\nkey_file = \"/etc/cassio/node.key\"\n",
        )
        .unwrap();
        let tls = from_file.tls.expect("[tls] read");
        assert_eq!(tls.cert_file, PathBuf::from("/etc/cassio/node.crt"));
        assert_eq!(tls.key_file, PathBuf::from("/etc/cassio/node.key"));
        let half = config_from_file("[tls]\ncert_file = \"/etc/cassio/node.crt\"\n").unwrap_err();
        assert!(format!("{half:#}").contains("key_file"), "{half:#}");

        let flags = |extra: &[&str]| {
            let args = Args::try_parse_from([&["cassio-node"], extra].concat())?;
            args.node_config()
        };
        let both = flags(&["--tls-cert-file", "a.crt", "--tls-key-file", "a.key"]).unwrap();
        assert_eq!(both.tls.unwrap().key_file, PathBuf::from("a.key"));
        let alone = flags(&["--tls-cert-file", "a.crt"]).unwrap_err();
        assert!(alone.to_string().contains("--tls-key-file"), "{alone}");
        let ca = flags(&[
            "--tls-cert-file",
            "a.crt",
            "--tls-key-file",
            "a.key",
            "--tls-ca-cert-file",
            "ca.crt",
        ])
        .unwrap();
        assert_eq!(ca.tls.unwrap().ca_cert_file, Some(PathBuf::from("ca.crt")));
        let ca_alone = flags(&["--tls-ca-cert-file", "ca.crt"]).unwrap_err();
        assert!(
            ca_alone.to_string().contains("--tls-cert-file"),
            "{ca_alone}"
        );
    }
}
