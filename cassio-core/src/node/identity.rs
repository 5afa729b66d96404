//! What a starting node's name means to the cluster, checked before it
//! gossips. A name is an identity: gossip under a new generation replaces
//! whatever the cluster held under that name. So a starting node first asks
//! its contacts for their view of the cluster, and the first that answers
//! decides:
//!
//! - A new node (empty storage, no peers known) may not take the name of a
//!   member that holds data (NORMAL or LEAVING): it would take that
//!   member's place in the ring with none of its data.
//! - A node restarting on its data may not come back if the cluster removed
//!   it (`cassio removenode`, LEFT): its keys went to other replicas and it
//!   missed every write since, so it would serve stale data and bring back
//!   deletes. (A node that left by decommission has its `left` marker.)
//!
//! A contact that refuses the handshake (same name as this node, another
//! cluster) stops the start too. A new node asks for a while (its seeds may
//! not be up yet) and then joins unchecked; a restarting node asks once,
//! all contacts at a time, since in a whole-cluster restart none answers.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::shared::NodeShared;
use crate::cluster::NodeStatus;
use crate::error::{Error, Result};
use crate::net::Transport;
use crate::proto::{ClusterStatus, Request, Response};

/// Rounds in which a new node asks its contacts, a gossip interval apart,
/// before it joins unchecked (no contact answered: a seed not up yet, say).
const NEW_NODE_ROUNDS: u32 = 10;

impl<T: Transport> NodeShared<T> {
    /// Checks this node's name against its contacts' view: see the module
    /// docs. `new` says whether this node starts new (empty, to join).
    pub(super) async fn check_identity(&self, contacts: &[SocketAddr], new: bool) -> Result<()> {
        if contacts.is_empty() {
            return Ok(());
        }
        let rounds = if new { NEW_NODE_ROUNDS } else { 1 };
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(self.config.gossip_interval_ms)).await;
            }
            let mut asks: FuturesUnordered<_> =
                contacts.iter().map(|&addr| self.view_of(addr)).collect();
            while let Some(answer) = asks.next().await {
                if let Some(view) = answer? {
                    return self.judge_identity(&view, new);
                }
            }
        }
        if new {
            tracing::warn!(
                node = %self.node_id,
                ?contacts,
                "no contact answered; joining without checking that the name is free"
            );
        } else {
            tracing::info!(node = %self.node_id, "no contact answered; restarting unchecked");
        }
        Ok(())
    }

    /// `addr`'s view of the cluster; `None` if it does not answer in time.
    /// A refused handshake, or a failed TLS one (certificates that do not
    /// match the CA), is an error: a setting to fix before the node joins.
    async fn view_of(&self, addr: SocketAddr) -> Result<Option<ClusterStatus>> {
        // Not pooled: the start needs the connect's own error.
        let conn = match self.peers.open_unpooled(addr).await {
            Ok(conn) => conn,
            Err(refused @ (Error::HandshakeRefused { .. } | Error::Tls { .. })) => {
                return Err(refused);
            }
            Err(_) => return Ok(None),
        };
        match conn
            .request(Request::ClusterStatus, self.peer_timeout())
            .await
        {
            Ok(Response::ClusterStatus(view)) => Ok(Some(view)),
            _ => Ok(None),
        }
    }

    fn judge_identity(&self, view: &ClusterStatus, new: bool) -> Result<()> {
        let Some(holder) = view.members.iter().find(|m| m.node == self.node_id) else {
            return Ok(());
        };
        let as_seen = || {
            format!(
                "{} at {}, as {} sees it",
                holder.status.as_str(),
                holder.native_addr,
                view.answered_by
            )
        };
        if new && holder.status.owns_data() {
            return Err(Error::NameTaken {
                name: self.node_id.to_string(),
                holder: as_seen(),
            });
        }
        if !new && holder.status == NodeStatus::Left {
            return Err(Error::RemovedFromCluster {
                name: self.node_id.to_string(),
                seen_by: view.answered_by.to_string(),
            });
        }
        Ok(())
    }
}
