//! `ubuntu_init.sh` as far as a machine without systemd running can take
//! it: installed into directories (`--root`) from the built binaries, for
//! two hosts on 127.0.0.1, the second joining the first through `--seeds`.
//! The unit passes `systemd-analyze verify`; the written configs start real
//! nodes that form a cluster and serve data; running it again keeps the
//! config; bad options are refused with a sentence and exit status 2.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
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

/// Installs a host into `root` (RF 2, 127.0.0.1), with `extra` options.
fn install(
    root: &Path,
    name: &str,
    (native, resp): (u16, u16),
    seeds: Option<u16>,
    extra: &[&str],
) -> Output {
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
    args.extend(extra);
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

/// Sends `request` on a fresh connection to `port` and reads until the
/// other end closes; `None` if nothing answers yet.
fn exchange(port: u16, request: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// One inline command over a fresh connection, after `AUTH password` if
/// one is given; the command's reply, or `None` if nothing answers yet.
fn resp(port: u16, password: Option<&str>, command: &str) -> Option<String> {
    let mut request = Vec::new();
    if let Some(password) = password {
        // As an array: the password may hold quotes and spaces.
        write!(
            request,
            "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n",
            password.len()
        )
        .ok()?;
    }
    write!(request, "{command}\r\nQUIT\r\n").ok()?;
    let reply = exchange(port, &request)?;
    // The first reply is AUTH's, the last QUIT's.
    let reply = match password {
        Some(_) => reply.strip_prefix("+OK\r\n")?,
        None => &reply,
    };
    reply.strip_suffix("+OK\r\n").map(str::to_string)
}

/// `GET path` over HTTP/1.1; the status line, or `None` if nothing answers.
fn http_status(port: u16, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let answer = exchange(port, request.as_bytes())?;
    answer.lines().next().map(str::to_string)
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

/// The password both hosts are installed with: quotes, backslashes and
/// spaces must reach the node as written. Only the file's first line counts.
const PASSWORD: &str = r#"s3cret "quoted" \ and \\ slashes"#;

#[test]
fn two_hosts_installed_by_the_script_form_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (root1, root2) = (dir.path().join("host1"), dir.path().join("host2"));
    let (native1, resp1, http1) = (free_port(), free_port(), free_port());
    let (native2, resp2, http2) = (free_port(), free_port(), free_port());
    let password_file = dir.path().join("password");
    // Saved with Windows line ends: the \r is not part of the password.
    std::fs::write(&password_file, format!("{PASSWORD}\r\nnot this line\r\n")).unwrap();
    let password_file = password_file.to_str().unwrap();
    let (http1_port, http2_port) = (http1.to_string(), http2.to_string());
    let extra1 = ["--password-file", password_file, "--http-port", &http1_port];
    let extra2 = ["--password-file", password_file, "--http-port", &http2_port];

    let out = install(&root1, "h1", (native1, resp1), None, &extra1);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(root1.join("usr/local/bin/cassio-node").is_file());
    assert_eq!(
        root1.join("usr/local/bin/cassio").is_file(),
        bin_dir().join("cassio").is_file(),
        "the CLI is installed when it was built"
    );
    assert!(root1.join("var/lib/cassio").is_dir());
    let config_path = root1.join("etc/cassio/cassio.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        config.contains(&format!("broadcast = \"127.0.0.1:{native1}\""))
            && config.contains(&format!("seeds = [\"127.0.0.1:{native1}\"]"))
            && config.contains(&format!("http = \"127.0.0.1:{http1}\"")),
        "without --seeds the first host is its own seed: {config}"
    );
    let mode = std::fs::metadata(&config_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o640,
        "the config holds the password: not world-readable"
    );
    verify_unit(&root1);

    let out = install(&root2, "h2", (native2, resp2), Some(native1), &extra2);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let _h1 = start(&root1, &dir.path().join("data1"));
    let _h2 = start(&root2, &dir.path().join("data2"));
    wait_until("both hosts NORMAL and UP in h2's view", || {
        resp(resp2, Some(PASSWORD), "INFO cluster").is_some_and(|info| {
            info.contains(&format!("member:h1,127.0.0.1:{native1},UP,NORMAL"))
                && info.contains(&format!("member:h2,127.0.0.1:{native2},UP,NORMAL"))
        })
    });
    assert_eq!(
        resp(resp1, Some(PASSWORD), "SET installed yes").as_deref(),
        Some("+OK\r\n")
    );
    assert_eq!(
        resp(resp2, Some(PASSWORD), "GET installed").as_deref(),
        Some("$3\r\nyes\r\n")
    );
    let refused = resp(resp1, None, "GET installed").unwrap_or_default();
    assert!(
        refused.starts_with("-NOAUTH"),
        "no AUTH, no data: {refused}"
    );
    for http in [http1, http2] {
        assert_eq!(
            http_status(http, "/ready").as_deref(),
            Some("HTTP/1.1 200 OK"),
            "the probe on port {http}"
        );
    }

    // Again, with another name: the config (and so the node's name) stays,
    // made private if it was not.
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = install(&root1, "renamed", (native1, resp1), None, &extra1);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("keeping"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), config);
    let mode = std::fs::metadata(&config_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn written_configs_follow_the_options_and_broken_ones_are_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        |root: &Path| std::fs::read_to_string(root.join("etc/cassio/cassio.toml")).unwrap();
    let (default, off) = (dir.path().join("default"), dir.path().join("off"));
    let out = install(&default, "d", (free_port(), free_port()), None, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = config(&default);
    assert!(
        written.contains("http = \"127.0.0.1:9180\"") && !written.contains("password"),
        "{written}"
    );
    let out = install(
        &off,
        "o",
        (free_port(), free_port()),
        None,
        &["--http-port", "off"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = config(&off);
    assert!(!written.contains("http ="), "{written}");

    // TLS: the certificate and key installed beside the config (the key
    // private), and the config's [tls] names them where they are installed.
    let pem = |name: &str| {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (crt, key) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&key, signing_key.serialize_pem()).unwrap();
        (
            crt.to_str().unwrap().to_string(),
            key.to_str().unwrap().to_string(),
        )
    };
    let ((crt, key), (_, other_key)) = (pem("node"), pem("other"));
    let tls = dir.path().join("tls");
    let out = install(
        &tls,
        "t",
        (free_port(), free_port()),
        None,
        &["--tls-cert", &crt, "--tls-key", &key, "--tls-ca", &crt],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = config(&tls);
    assert!(
        written.contains("ca_cert_file = \"/etc/cassio/ca.crt\"")
            && tls.join("etc/cassio/ca.crt").exists(),
        "{written}"
    );
    assert!(
        written.contains(
            "[tls]\ncert_file = \"/etc/cassio/tls.crt\"\nkey_file = \"/etc/cassio/tls.key\"\n"
        ),
        "{written}"
    );
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tls.join("etc/cassio/tls.key")), 0o640);
    assert_eq!(
        std::fs::read(tls.join("etc/cassio/tls.crt")).unwrap(),
        std::fs::read(&crt).unwrap()
    );

    // Options the script lets through but the daemon refuses (a
    // replication factor past u32, a password that is not UTF-8): the
    // written config is checked before it is installed, so a rerun does
    // not keep a broken one.
    let latin1 = dir.path().join("latin1");
    std::fs::write(&latin1, b"caf\xe9\n").unwrap();
    let latin1 = latin1.to_str().unwrap();
    for (name, extra) in [
        (
            "rf",
            &[
                "--replication-factor",
                "99999999999",
                "--tls-cert",
                &crt,
                "--tls-key",
                &key,
            ][..],
        ),
        ("latin1", &["--password-file", latin1]),
        ("tls", &["--tls-cert", &crt, "--tls-key", &other_key]),
    ] {
        let bad = dir.path().join(format!("bad-{name}"));
        let out = install(&bad, "b", (free_port(), free_port()), None, extra);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out.stderr));
        assert!(!bad.join("etc/cassio/cassio.toml").exists(), "{name}");
        assert!(!bad.join("etc/cassio/tls.key").exists(), "{name}");
        let stderr = text(&out.stderr);
        match name {
            "rf" => assert!(stderr.contains("nothing was installed"), "{stderr}"),
            "tls" => assert!(
                stderr.contains("do not make a server identity")
                    && stderr.contains("do not make a usable TLS setting"),
                "{stderr}"
            ),
            _ => {}
        }
    }
}

#[test]
fn bad_options_are_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let bins = bin_dir();
    let bins = bins.to_str().unwrap();
    let base = ["--root", root, "--bin-dir", bins, "--address", "127.0.0.1"];
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\nsecond line\n").unwrap();
    let empty = empty.to_str().unwrap();
    let cases: [(&[&str], &str); 11] = [
        (&["--native-port", "70000"], "--native-port must be 1-65535"),
        (&["--seeds", "db1"], "'db1' is not HOST:PORT"),
        (
            &["--replication-factor", "0"],
            "--replication-factor must be",
        ),
        (&["--name", "a b"], "--name may hold"),
        (&["--colour", "red"], "unknown option '--colour'"),
        (&["--native-port"], "--native-port needs a value"),
        (
            &["--http-port", "none"],
            "--http-port must be 1-65535 or off",
        ),
        (&["--http-port", "6379"], "--http-port must differ"),
        (
            &["--password-file", "/nonexistent/password"],
            "cannot read --password-file",
        ),
        (
            &["--password-file", empty],
            "holds no password on its first line",
        ),
        (
            &["--tls-cert", "/etc/hostname"],
            "--tls-cert and --tls-key go together",
        ),
    ];
    for (args, sentence) in cases {
        let out = init(&[&base[..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(sentence), "{args:?}: {stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["empty"], "nothing is installed after a refusal");
    let help = init(&["--help"]);
    assert!(help.status.success() && text(&help.stdout).contains("--seeds HOST:PORT"));
}
