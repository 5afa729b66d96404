//! `cassio-node`: the daemon. Flags, config file, signals and logging around
//! `cassio_core::Node` arrive with the membership issue; until then this
//! binary says so and exits non-zero rather than pretend to serve.

fn main() -> std::process::ExitCode {
    eprintln!(
        "cassio-node {}: the daemon is not built yet (the storage engine is; see README.md, Status)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
