//! Hosts for tests: network namespaces this test process creates, each
//! with one address on a shared bridge (10.201.0.1, .2, ...), its own
//! loopback, and an /etc/hosts of names the test gives (`ip netns exec`
//! mounts /etc/netns/NAME/hosts over /etc/hosts). Processes started in them
//! are ended by PID, and the namespaces and files removed, on drop. Needs
//! root and iproute2.

#![allow(dead_code)] // each test file uses part of it

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Hosts {
    /// The hosts' namespaces, in order.
    pub namespaces: Vec<String>,
    /// Host i's address.
    pub ips: Vec<String>,
    /// The namespace holding the bridge.
    hub: String,
    processes: Vec<Child>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
        for ns in self.namespaces.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(etc_dir(ns));
        }
    }
}

fn etc_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this process may create namespaces (runs as root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    })
}

impl Hosts {
    /// `names.len()` hosts; every host's /etc/hosts maps `names[i]` to host
    /// i's address. Namespace names carry this process's id and `tag`, so
    /// that parallel tests do not meet.
    pub fn create(tag: &str, names: &[&str]) -> Hosts {
        let prefix = format!("cassio-{}-{tag}", std::process::id());
        let mut hosts = Hosts {
            namespaces: Vec::new(),
            ips: Vec::new(),
            hub: format!("{prefix}-hub"),
            processes: Vec::new(),
        };
        ip(&["netns", "add", &hosts.hub]);
        ip(&["-n", &hosts.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hosts.hub, "link", "set", "br0", "up"]);
        for i in 0..names.len() {
            let ns = format!("{prefix}-{i}");
            let address = format!("10.201.0.{}", i + 1);
            std::fs::create_dir_all(etc_dir(&ns)).unwrap();
            ip(&["netns", "add", &ns]);
            hosts.namespaces.push(ns.clone());
            hosts.write_hosts_file(i, names);
            let port = format!("port{i}");
            ip(&[
                "-n", &hosts.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&[
                "-n", &hosts.hub, "link", "set", &port, "master", "br0", "up",
            ]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            hosts.ips.push(address);
        }
        hosts
    }

    /// Makes host `i`'s /etc/hosts map `names[j]` to host j's address (the
    /// file is rewritten in place, so running processes see it too).
    pub fn write_hosts_file(&self, i: usize, names: &[&str]) {
        let entries: String = names
            .iter()
            .enumerate()
            .map(|(j, name)| format!("10.201.0.{} {name}\n", j + 1))
            .collect();
        let path = etc_dir(&self.namespaces[i]).join("hosts");
        std::fs::write(path, format!("127.0.0.1 localhost\n{entries}")).unwrap();
    }

    /// Starts `program` with `args` and exactly `env` on host `i`; kept
    /// until the hosts are dropped.
    pub fn start(&mut self, i: usize, program: &str, args: &[&str], env: &[(String, String)]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[i], program])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} on host {i}: {e}"));
        self.processes.push(child);
    }

    /// `redis-cli` on host `i` against `target` (host:port), fed
    /// `commands` one per line on one connection; its stdout.
    pub fn redis_cli(&self, i: usize, target: (&str, u16), commands: &str) -> String {
        use std::io::Write;
        let mut cli = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[i], "redis-cli"])
            .args(["-h", target.0, "-p", &target.1.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run redis-cli (Debian's redis-tools; .ci/run installs it)");
        cli.stdin
            .take()
            .unwrap()
            .write_all(commands.as_bytes())
            .unwrap();
        let out = cli.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `keys` keys through host `writer`'s Redis port, then reads
    /// every one back at ALL through host `reader`'s, so that every replica
    /// answers across the bridge. Both hosts serve RESP on `resp_port`.
    pub fn write_then_read_at_all(
        &self,
        writer: usize,
        reader: usize,
        resp_port: u16,
        keys: usize,
    ) {
        let sets: String = (0..keys)
            .map(|i| format!("SET key{i} value{i}\n"))
            .collect();
        let written = self.redis_cli(writer, (&self.ips[writer], resp_port), &sets);
        assert_eq!(
            written.lines().filter(|l| *l == "OK").count(),
            keys,
            "writes through host {writer}: {written}"
        );
        let gets: String = std::iter::once("CASSIO.CONSISTENCY ALL\n".to_string())
            .chain((0..keys).map(|i| format!("GET key{i}\n")))
            .collect();
        let read = self.redis_cli(reader, (&self.ips[reader], resp_port), &gets);
        let values: Vec<&str> = read.lines().skip(1).collect();
        let wanted: Vec<String> = (0..keys).map(|i| format!("value{i}")).collect();
        assert_eq!(values, wanted, "reads at ALL through host {reader}: {read}");
    }

    /// Waits up to `limit` until `check`, or fails the test naming `what`.
    pub fn wait_until(&self, limit: std::time::Duration, what: &str, check: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !check() {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}
