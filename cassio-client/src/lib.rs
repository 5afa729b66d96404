//! cassio-client: the client library. It depends on cassio-core's protocol
//! layer only, which arrives with the membership issue; this crate is empty
//! until then.
