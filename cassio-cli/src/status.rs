//! Rendering a cluster status: a nodetool-status table, or JSON.

use cassio_core::proto::ClusterStatus;

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(crate) fn table(status: &ClusterStatus) -> String {
    let mut out = format!(
        "Cluster: {}  (replication factor {}, as seen by {})\nStatus=Up/Down  State=Normal/Joining/Leaving/Left\n",
        status.cluster_name, status.replication_factor, status.answered_by
    );
    out.push_str(&format!(
        "{:<3} {:<22} {:<12} {:<6} {:<8} {:>10} {:>7} {:>7}  {}\n",
        "--", "Address", "Node", "Status", "State", "Load", "Owns", "Vnodes", "RESP"
    ));
    for m in &status.members {
        let code = format!(
            "{}{}",
            if m.up { 'U' } else { 'D' },
            &m.status.as_str()[..1]
        );
        out.push_str(&format!(
            "{:<3} {:<22} {:<12} {:<6} {:<8} {:>10} {:>6.1}% {:>7}  {}\n",
            code,
            m.native_addr,
            m.node,
            if m.up { "UP" } else { "DOWN" },
            m.status.as_str(),
            human_bytes(m.load_bytes),
            m.owns * 100.0,
            m.vnodes,
            m.resp_addr
                .map_or_else(|| "-".to_string(), |a| a.to_string())
        ));
    }
    out
}

pub(crate) fn json(status: &ClusterStatus) -> String {
    let members: Vec<String> = status
        .members
        .iter()
        .map(|m| {
            format!(
                r#"{{"node":"{}","address":"{}","resp":{},"up":{},"state":"{}","generation":{},"load_bytes":{},"owns":{:.4},"vnodes":{}}}"#,
                m.node,
                m.native_addr,
                m.resp_addr.map_or_else(|| "null".to_string(), |a| format!("\"{a}\"")),
                m.up,
                m.status.as_str(),
                m.generation,
                m.load_bytes,
                m.owns,
                m.vnodes
            )
        })
        .collect();
    format!(
        r#"{{"cluster":"{}","replication_factor":{},"answered_by":"{}","members":[{}]}}"#,
        status.cluster_name,
        status.replication_factor,
        status.answered_by,
        members.join(",")
    )
}
