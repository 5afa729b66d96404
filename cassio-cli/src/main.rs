//! `cassio`: the command-line tool (up, get/set/del, status, shell, bench).
//! It arrives with the clients issue; until then it says so and exits non-zero.

fn main() -> std::process::ExitCode {
    eprintln!(
        "cassio {}: the CLI is not built yet (the storage engine is; see README.md, Status)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
