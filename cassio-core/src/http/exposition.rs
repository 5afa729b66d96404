//! Prometheus's text exposition format (version 0.0.4): the page `/metrics`
//! answers, rendered from one look at a node's status and storage. Every
//! family gets its `# HELP` and `# TYPE` lines; label values are escaped.

use std::fmt::{Display, Write};

use crate::cluster::NodeStatus;
use crate::coordinator::{LATENCY_BOUNDS_US, LatencySnapshot};
use crate::proto::{ClusterStatus, MemberStatus};
use crate::storage::StorageStats;

/// The `Content-Type` of the page.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A page being written.
#[derive(Default)]
struct Page {
    text: String,
}

impl Page {
    /// Starts a metric family.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label_value(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A histogram of seconds: cumulative buckets, sum and count.
    fn histogram(&mut self, name: &str, help: &str, latency: &LatencySnapshot) {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (bound_us, at_most) in LATENCY_BOUNDS_US.iter().zip(latency.at_most) {
            let le = (*bound_us as f64 / 1e6).to_string();
            self.sample(&bucket, &[("le", &le)], at_most);
        }
        self.sample(&bucket, &[("le", "+Inf")], latency.count);
        self.sample(&format!("{name}_sum"), &[], latency.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), &[], latency.count);
    }

    /// A gauge with one sample per member, labelled with its node name.
    fn per_member<V: Display>(
        &mut self,
        name: &str,
        help: &str,
        members: &[MemberStatus],
        value: impl Fn(&MemberStatus) -> V,
    ) {
        self.family(name, Kind::Gauge, help);
        for member in members {
            self.sample(name, &[("node", member.node.as_str())], value(member));
        }
    }

    /// A family of one sample without labels.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family of one sample for each (name, help, value).
    fn singles(&mut self, kind: Kind, families: &[(&str, &str, u64)]) {
        for &(name, help, value) in families {
            self.single(name, kind, help, value);
        }
    }
}

/// A label value as the format wants it: backslash, double quote and line
/// feed escaped.
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// What the node keeps that its cluster status (on the wire) does not
/// carry: the latency histograms of the keys it coordinated, how often it
/// worked around slow or stalled replicas, and its client connections.
#[derive(Default)]
pub(crate) struct NodeLocal {
    pub(crate) reads: LatencySnapshot,
    pub(crate) writes: LatencySnapshot,
    pub(crate) speculative_retries: u64,
    pub(crate) stalled_replica_requests: u64,
    pub(crate) client_connections: u64,
    pub(crate) client_connections_max: u64,
    pub(crate) client_connections_refused: u64,
}

/// The whole page: who answers, the coordinator's counters and latencies,
/// the client connections,
/// every member as this node sees it, and this node's storage.
pub(crate) fn render(status: &ClusterStatus, local: &NodeLocal, storage: &StorageStats) -> String {
    use Kind::{Counter, Gauge};
    let mut page = Page::default();
    page.family(
        "cassio_info",
        Gauge,
        "The node answering, its cluster and its version; always 1.",
    );
    page.sample(
        "cassio_info",
        &[
            ("node", status.answered_by.as_str()),
            ("cluster", &status.cluster_name),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    page.single(
        "cassio_replication_factor",
        Gauge,
        "Copies of each key.",
        status.replication_factor,
    );

    let m = &status.metrics;
    page.singles(
        Counter,
        &[
            (
                "cassio_coordinator_reads_total",
                "Keys read with this node as coordinator.",
                m.reads,
            ),
            (
                "cassio_coordinator_writes_total",
                "Keys written with this node as coordinator.",
                m.writes,
            ),
            (
                "cassio_coordinator_unavailable_total",
                "Keys answered QuorumNotReached: too few replicas up or answering.",
                m.unavailable,
            ),
            (
                "cassio_coordinator_timeouts_total",
                "Keys whose level was not met before the read or write timeout.",
                m.timeouts,
            ),
            (
                "cassio_coordinator_invalid_requests_total",
                "Keys refused as invalid (key or value too large, bad level).",
                m.invalid_requests,
            ),
            (
                "cassio_hints_stored_total",
                "Writes kept as hints for a replica that missed them.",
                m.hints_stored,
            ),
            (
                "cassio_hints_replayed_total",
                "Hints delivered to their replica.",
                m.hints_replayed,
            ),
            (
                "cassio_hints_expired_total",
                "Hints dropped as older than the hint window.",
                m.hints_expired,
            ),
            (
                "cassio_hints_dropped_total",
                "Hints not kept: the hint store was full.",
                m.hints_dropped,
            ),
            (
                "cassio_read_repairs_total",
                "Keys written to a stale replica by read repair (reads and scans).",
                m.read_repairs,
            ),
            (
                "cassio_repairs_total",
                "Anti-entropy repairs this node ran to the end with every live peer.",
                m.repairs,
            ),
        ],
    );

    page.histogram(
        "cassio_coordinator_read_latency_seconds",
        "Time from a read's arrival at this node as coordinator to its answer, per key.",
        &local.reads,
    );
    page.histogram(
        "cassio_coordinator_write_latency_seconds",
        "Time from a write's arrival at this node as coordinator to its answer, per key.",
        &local.writes,
    );
    page.singles(
        Counter,
        &[
            (
                "cassio_coordinator_speculative_retries_total",
                "Keys whose read asked its other live replicas too, as the ones asked had not answered within read_speculative_retry_ms.",
                local.speculative_retries,
            ),
            (
                "cassio_coordinator_stalled_replica_requests_total",
                "Replica requests not sent because the replica had stopped answering (a stalled peer): the write was hinted, the read asked another replica.",
                local.stalled_replica_requests,
            ),
        ],
    );
    page.singles(
        Gauge,
        &[
            (
                "cassio_client_connections",
                "Client connections open (Redis-protocol and native; peers do not count).",
                local.client_connections,
            ),
            (
                "cassio_client_connections_max",
                "Client connections allowed open at once (max_clients).",
                local.client_connections_max,
            ),
        ],
    );
    page.single(
        "cassio_client_connections_refused_total",
        Counter,
        "Client connections refused because max_clients were open.",
        local.client_connections_refused,
    );

    let members = &status.members;
    page.per_member(
        "cassio_member_up",
        "1 if this node sees the member UP (phi below the threshold), 0 if DOWN.",
        members,
        |m| u8::from(m.up),
    );
    page.family(
        "cassio_member_state",
        Gauge,
        "The member's state as this node sees it: 1 for its state, 0 for the others.",
    );
    for member in members {
        for state in NodeStatus::ALL {
            let labels = [("node", member.node.as_str()), ("state", state.as_str())];
            page.sample(
                "cassio_member_state",
                &labels,
                u8::from(member.status.shown() == state),
            );
        }
    }
    page.per_member(
        "cassio_member_load_bytes",
        "Bytes the member stores (SSTables and memtable), as last gossiped.",
        members,
        |m| m.load_bytes,
    );
    page.per_member(
        "cassio_member_owns_ratio",
        "Share of keys the member holds as first replica, estimated from the ring.",
        members,
        |m| m.owns,
    );

    let s = storage;
    page.singles(
        Gauge,
        &[
            (
                "cassio_storage_memtable_bytes",
                "Bytes in the active memtable.",
                s.memtable_bytes as u64,
            ),
            (
                "cassio_storage_memtable_entries",
                "Cells in the active and immutable memtables.",
                s.memtable_entries as u64,
            ),
            (
                "cassio_storage_immutable_memtables",
                "Full memtables waiting to be flushed.",
                s.immutable_memtables as u64,
            ),
            (
                "cassio_storage_sstables",
                "Live SSTables.",
                s.sstables as u64,
            ),
            (
                "cassio_storage_sstable_bytes",
                "Bytes in live SSTables.",
                s.sstable_bytes,
            ),
            (
                "cassio_storage_sstable_entries",
                "Cells in live SSTables (a key in several tables counts in each).",
                s.sstable_entries,
            ),
            (
                "cassio_storage_sstable_tombstones",
                "Tombstones in live SSTables.",
                s.sstable_tombstones,
            ),
        ],
    );
    page.singles(
        Counter,
        &[
            (
                "cassio_storage_flushes_total",
                "Memtables flushed to SSTables.",
                s.flushes,
            ),
            (
                "cassio_storage_compactions_total",
                "Compactions run.",
                s.compactions,
            ),
            (
                "cassio_storage_tombstones_purged_total",
                "Tombstones dropped by compaction after gc_grace_ms.",
                s.tombstones_purged,
            ),
            (
                "cassio_storage_write_stalls_total",
                "Writes that waited for a flush: too many memtables were full.",
                s.write_stalls,
            ),
            (
                "cassio_storage_commit_log_syncs_total",
                "Commit-log fsyncs.",
                s.commit_log_syncs,
            ),
        ],
    );
    page.text
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use std::time::Duration;

    use super::*;
    use crate::coordinator::LatencyHistogram;
    use crate::http::tests::view;

    /// The page's samples by series (name and labels as written), after
    /// checking its form: every sample belongs to the family declared just
    /// before it, with HELP and TYPE, and no family is declared twice.
    fn samples(page: &str) -> BTreeMap<String, f64> {
        let (mut families, mut current) = (BTreeSet::new(), String::new());
        let mut histogram = false;
        let mut samples = BTreeMap::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(families.insert(name.clone()), "{name} declared twice");
                current = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(name, current, "TYPE without HELP");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                histogram = kind == "histogram";
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                let family = match histogram {
                    true => ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix))
                        .unwrap_or(name),
                    false => name,
                };
                assert_eq!(family, current, "{line} outside its family");
                samples.insert(series.to_string(), value.parse::<f64>().unwrap());
            }
        }
        samples
    }

    #[test]
    fn the_page_is_well_formed_and_says_what_the_node_sees() {
        // b has streamed: its second phase shows as JOINING.
        let mut status = view(
            "a",
            &[
                ("a", NodeStatus::Normal),
                ("b", NodeStatus::JoiningStreamed),
            ],
        );
        status.metrics.reads = 42;
        status.metrics.read_repairs = 3;
        let storage = StorageStats {
            sstables: 5,
            sstable_bytes: 123_456,
            flushes: 7,
            ..Default::default()
        };
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(300), 2);
        histogram.record(Duration::from_millis(20), 1);
        let local = NodeLocal {
            reads: histogram.snapshot(),
            client_connections: 4,
            client_connections_refused: 2,
            speculative_retries: 6,
            ..Default::default()
        };
        let page = render(&status, &local, &storage);
        assert!(page.ends_with('\n'));
        let samples = samples(&page);
        let value = |series: &str| *samples.get(series).unwrap_or_else(|| panic!("no {series}"));
        assert_eq!(value("cassio_coordinator_reads_total"), 42.0);
        assert_eq!(value("cassio_read_repairs_total"), 3.0);
        assert_eq!(value("cassio_client_connections"), 4.0);
        assert_eq!(value("cassio_client_connections_refused_total"), 2.0);
        assert_eq!(value("cassio_coordinator_speculative_retries_total"), 6.0);
        assert_eq!(
            value("cassio_coordinator_stalled_replica_requests_total"),
            0.0
        );
        assert_eq!(value("cassio_replication_factor"), 3.0);
        assert_eq!(value(r#"cassio_member_up{node="a"}"#), 1.0);
        assert_eq!(value(r#"cassio_member_up{node="b"}"#), 0.0);
        assert_eq!(
            value(r#"cassio_member_state{node="b",state="JOINING"}"#),
            1.0
        );
        assert_eq!(
            value(r#"cassio_member_state{node="b",state="NORMAL"}"#),
            0.0
        );
        assert_eq!(value(r#"cassio_member_load_bytes{node="b"}"#), 2000.0);
        assert_eq!(value("cassio_storage_sstables"), 5.0);
        assert_eq!(value("cassio_storage_sstable_bytes"), 123_456.0);
        assert_eq!(value("cassio_storage_flushes_total"), 7.0);
        let read_bucket = |le: &str| {
            value(&format!(
                r#"cassio_coordinator_read_latency_seconds_bucket{{le="{le}"}}"#
            ))
        };
        assert_eq!(read_bucket("0.00025"), 0.0);
        assert_eq!(read_bucket("0.0005"), 2.0);
        assert_eq!(read_bucket("0.01"), 2.0);
        assert_eq!(read_bucket("0.025"), 3.0);
        assert_eq!(read_bucket("+Inf"), 3.0);
        assert_eq!(value("cassio_coordinator_read_latency_seconds_count"), 3.0);
        assert_eq!(value("cassio_coordinator_read_latency_seconds_sum"), 0.0206);
        assert_eq!(value("cassio_coordinator_write_latency_seconds_count"), 0.0);
        let info = format!(
            r#"cassio_info{{node="a",cluster="c",version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(value(&info), 1.0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("line\nbreak"), r"line\nbreak");
        let mut status = view("a", &[("a", NodeStatus::Normal)]);
        status.cluster_name = "say \"hi\"".into();
        let page = render(&status, &NodeLocal::default(), &StorageStats::default());
        assert!(page.contains(r#"cluster="say \"hi\"""#), "{page}");
    }
}
