//! The native wire protocol, shared by peers and clients: message types and
//! the codec (bincode 2 in length-prefixed frames). Nothing here knows about
//! sockets beyond `AsyncRead`/`AsyncWrite`.

mod codec;
mod message;

pub(crate) use codec::write_flushed;
pub use codec::{
    FRAME_BYTES_LIMIT, decode, encode, encode_frame, encode_frame_into, read_frame,
    read_frame_into, whole_frame_len, write_frame,
};
pub use message::{
    CleanupSummary, ClusterStatus, Frame, Hello, HelloReply, KeyRange, KeyedCell, KeyedCellRef,
    MAGIC, MemberStatus, MoveSummary, PROTOCOL_VERSION, ReplicaRequest, Request, RequestFrame,
    Response, Role, ScanEntry, StreamSummary, Topology, TopologyMember, keyed_cell_bytes,
};
