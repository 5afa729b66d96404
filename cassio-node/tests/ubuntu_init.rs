//! `ubuntu_init.sh` as far as a machine without systemd running can take
//! it: installed into directories (`--root`) from the built binaries, for
//! two hosts on 127.0.0.1, the second joining the first through `--seeds`.
//! The unit passes `systemd-analyze verify`; the written configs start real
//! nodes that form a cluster and serve data; running it again keeps the
//! config; bad options are refused with a sentence and exit status 2.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ubuntu_init.sh")
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_cassio-node"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn init(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("cannot run bash")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Installs a host into `root` (RF 2, 127.0.0.1).
fn install(root: &Path, name: &str, native: u16, resp: u16, seeds: Option<u16>) -> Output {
    let (native, resp) = (native.to_string(), resp.to_string());
    let seeds = seeds.map(|port| format!("127.0.0.1:{port}"));
    let bins = bin_dir();
    let mut args = vec![
        "--root",
        root.to_str().unwrap(),
        "--bin-dir",
        bins.to_str().unwrap(),
        "--address",
        "127.0.0.1",
        "--bind",
        "127.0.0.1",
        "--name",
        name,
        "--native-port",
        &native,
        "--resp-port",
        &resp,
        "--replication-factor",
        "2",
    ];
    if let Some(seeds) = &seeds {
        args.extend(["--seeds", seeds.as_str()]);
    }
    init(&args)
}

/// A node started from what the script installed, as the unit starts it
/// but with its data under the test's directory; killed by PID on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(root: &Path, data: &Path) -> Started {
    Started(
        Command::new(root.join("usr/local/bin/cassio-node"))
            .arg("--config")
            .arg(root.join("etc/cassio/cassio.toml"))
            .arg("--data-dir")
            .arg(data)
            .args(["--gossip-interval-ms", "200", "--log", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start the installed cassio-node"),
    )
}

/// One inline command over a fresh connection; the reply's text, or `None`
/// if nothing answers yet.
fn resp(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("{command}\r\nQUIT\r\n").as_bytes())
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    // The last reply is QUIT's.
    reply.strip_suffix("+OK\r\n").map(str::to_string)
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out after 30 s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `systemd-analyze verify` of the installed unit inside `root`, which gets
/// a copy of this machine's system units so the targets it names resolve.
fn verify_unit(root: &Path) {
    let units = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    let copied = Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(&units)
        .status()
        .unwrap();
    assert!(copied.success(), "cannot copy /usr/lib/systemd/system");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/etc/systemd/system/cassio.service")
        .output()
        .expect("systemd-analyze (Debian's systemd package) is needed for this test");
    let stderr = text(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("Unknown") && !stderr.contains("cassio.service"),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn two_hosts_installed_by_the_script_form_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (root1, root2) = (dir.path().join("host1"), dir.path().join("host2"));
    let (native1, resp1, native2, resp2) = (free_port(), free_port(), free_port(), free_port());

    let out = install(&root1, "h1", native1, resp1, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(root1.join("usr/local/bin/cassio-node").is_file());
    assert_eq!(
        root1.join("usr/local/bin/cassio").is_file(),
        bin_dir().join("cassio").is_file(),
        "the CLI is installed when it was built"
    );
    assert!(root1.join("var/lib/cassio").is_dir());
    let config = std::fs::read_to_string(root1.join("etc/cassio/cassio.toml")).unwrap();
    assert!(
        config.contains(&format!("broadcast = \"127.0.0.1:{native1}\""))
            && config.contains(&format!("seeds = [\"127.0.0.1:{native1}\"]")),
        "without --seeds the first host is its own seed: {config}"
    );
    verify_unit(&root1);

    let out = install(&root2, "h2", native2, resp2, Some(native1));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let _h1 = start(&root1, &dir.path().join("data1"));
    let _h2 = start(&root2, &dir.path().join("data2"));
    wait_until("both hosts NORMAL and UP in h2's view", || {
        resp(resp2, "INFO cluster").is_some_and(|info| {
            info.contains(&format!("member:h1,127.0.0.1:{native1},UP,NORMAL"))
                && info.contains(&format!("member:h2,127.0.0.1:{native2},UP,NORMAL"))
        })
    });
    assert_eq!(resp(resp1, "SET installed yes").as_deref(), Some("+OK\r\n"));
    assert_eq!(
        resp(resp2, "GET installed").as_deref(),
        Some("$3\r\nyes\r\n")
    );

    // Again, with another name: the config (and so the node's name) stays.
    let out = install(&root1, "renamed", native1, resp1, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("keeping"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(root1.join("etc/cassio/cassio.toml")).unwrap(),
        config
    );
}

#[test]
fn bad_options_are_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let bins = bin_dir();
    let bins = bins.to_str().unwrap();
    let base = ["--root", root, "--bin-dir", bins, "--address", "127.0.0.1"];
    let cases: [(&[&str], &str); 6] = [
        (&["--native-port", "70000"], "--native-port must be 1-65535"),
        (&["--seeds", "db1"], "'db1' is not HOST:PORT"),
        (
            &["--replication-factor", "0"],
            "--replication-factor must be",
        ),
        (&["--name", "a b"], "--name may hold"),
        (&["--colour", "red"], "unknown option '--colour'"),
        (&["--native-port"], "--native-port needs a value"),
    ];
    for (args, sentence) in cases {
        let out = init(&[&base[..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(sentence), "{args:?}: {stderr}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing is installed after a refusal"
    );
    let help = init(&["--help"]);
    assert!(help.status.success() && text(&help.stdout).contains("--seeds HOST:PORT"));
}
