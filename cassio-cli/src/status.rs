//! Rendering a cluster status: a nodetool-status table, or JSON; and
//! reading from it whether the answering node is ready.

use cassio_core::cluster::NodeStatus;
use cassio_core::proto::ClusterStatus;

/// Whether the node that answered is a full member, NORMAL in its own view
/// (a JOINING node still streams and is in no ring): a sentence either way.
pub(crate) fn readiness(status: &ClusterStatus) -> Result<String, String> {
    let me = &status.answered_by;
    match status.members.iter().find(|m| m.node == *me) {
        Some(m) if m.status == NodeStatus::Normal => Ok(format!("{me} is NORMAL: ready")),
        Some(m) => Err(format!("{me} is {}: not ready", m.status.as_str())),
        None => Err(format!(
            "{me} is not in its own view of the cluster: not ready"
        )),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use cassio_core::proto::MemberStatus;

    fn view(answered_by: &str, members: &[(&str, NodeStatus)]) -> ClusterStatus {
        ClusterStatus {
            answered_by: answered_by.into(),
            cluster_name: "c".into(),
            replication_factor: 3,
            members: members
                .iter()
                .enumerate()
                .map(|(i, (node, status))| MemberStatus {
                    node: (*node).into(),
                    native_addr: ([127, 0, 0, 1], 9000 + i as u16).into(),
                    resp_addr: None,
                    up: true,
                    status: *status,
                    generation: 1,
                    heartbeat: 1,
                    load_bytes: 0,
                    owns: 0.5,
                    vnodes: 16,
                })
                .collect(),
            metrics: Default::default(),
        }
    }

    #[test]
    fn only_a_node_normal_in_its_own_view_is_ready() {
        let members = [("a", NodeStatus::Normal), ("b", NodeStatus::Joining)];
        assert_eq!(
            readiness(&view("a", &members)),
            Ok("a is NORMAL: ready".into())
        );
        assert_eq!(
            readiness(&view("b", &members)),
            Err("b is JOINING: not ready".into())
        );
        assert!(readiness(&view("z", &members)).is_err());
    }
}
