//! Membership: gossip state, the phi-accrual failure detector and the
//! gossiper state machine. No IO and no clock here: `now_ms` and randomness
//! are passed in, and messages come in and go out as values.

mod gossiper;
mod phi;
mod state;

pub use gossiper::{GossipConfig, Gossiper, LocalEndpoint, Member};
pub use phi::ArrivalWindow;
pub use state::{
    Digest, EndpointDelta, EndpointState, GossipAck, GossipAck2, GossipSyn, NodeStatus, Versioned,
    moving_node,
};
