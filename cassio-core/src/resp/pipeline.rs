//! Which commands of a pipeline may run at the same time. Data commands run
//! together (in a *run*) unless one reads a key an earlier command of the run
//! writes, or writes a key an earlier one reads: such a command waits for the
//! run to finish, so every command sees the effects of the commands before
//! it, as if they had run one by one. Writes to the same key may share a run:
//! their timestamps are drawn in command order, so the later one wins
//! whatever order the replicas apply them in. SCAN and KEYS, which may read
//! any key, run alone.

use std::hash::Hasher;

use fnv::FnvHasher;

use super::commands::Command;

/// Commands in one run at most: bounds the replies held back at once.
pub(crate) const RUN_COMMANDS_MAX: usize = 128;

/// Key comparisons one admission may make.
const SCAN_COMPARISONS_MAX: usize = 64 * 1024;

/// The keys the commands admitted to the current run read and write, by
/// 64-bit hash (a collision only makes a command wait needlessly). A run is
/// short, and usually all reads or all writes, so plain lists scanned only
/// against the other kind are cheaper than sets. Reused from run to run, so
/// a connection's steady state allocates nothing here.
#[derive(Default)]
pub(crate) struct Run {
    reads: Vec<u64>,
    writes: Vec<u64>,
    commands: usize,
    /// A command that reads every key was admitted: nothing more is.
    closed: bool,
}

fn key_hash(key: &[u8]) -> u64 {
    let mut h = FnvHasher::default();
    h.write(key);
    h.finish()
}

impl Run {
    /// Admits a well-formed data command to the run, unless it conflicts with
    /// a command already in it or the run is full: then it must wait.
    pub(crate) fn admit(&mut self, command: Command, args: &[&[u8]]) -> bool {
        if self.commands >= RUN_COMMANDS_MAX || self.closed {
            return false;
        }
        if command.reads_every_key() {
            if self.commands > 0 {
                return false;
            }
            self.closed = true;
            self.commands = 1;
            return true;
        }
        let (reads, writes, step) = command.access(args);
        let (reads_before, writes_before) = (self.reads.len(), self.writes.len());
        self.reads.extend(reads.iter().map(|k| key_hash(k)));
        self.writes
            .extend(writes.iter().step_by(step).map(|k| key_hash(k)));
        let new_reads = self.reads.len() - reads_before;
        let new_writes = self.writes.len() - writes_before;
        // Huge multi-key commands would make the scan quadratic: past a
        // bound, such a command simply waits for the run (always correct).
        let scan = new_reads * writes_before + new_writes * reads_before;
        let conflicts = scan > SCAN_COMPARISONS_MAX
            || self.reads[reads_before..]
                .iter()
                .any(|k| self.writes[..writes_before].contains(k))
            || self.writes[writes_before..]
                .iter()
                .any(|k| self.reads[..reads_before].contains(k));
        if conflicts {
            self.reads.truncate(reads_before);
            self.writes.truncate(writes_before);
            return false;
        }
        self.commands += 1;
        true
    }

    /// Starts a new, empty run.
    pub(crate) fn clear(&mut self) {
        self.reads.clear();
        self.writes.clear();
        self.commands = 0;
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(run: &mut Run, args: &[&[u8]]) -> bool {
        let command = Command::data(args).expect("a well-formed data command");
        run.admit(command, args)
    }

    #[test]
    fn reads_after_writes_of_the_same_key_wait() {
        let mut run = Run::default();
        assert!(admit(&mut run, &[b"SET", b"a", b"1"]));
        assert!(admit(&mut run, &[b"GET", b"b"]), "another key");
        assert!(admit(&mut run, &[b"SET", b"a", b"2"]), "write after write");
        assert!(!admit(&mut run, &[b"GET", b"a"]), "read after write");
        assert!(!admit(&mut run, &[b"MGET", b"c", b"a"]));
        assert!(!admit(&mut run, &[b"DEL", b"b"]), "write after read");
        assert!(
            admit(&mut run, &[b"MSET", b"x", b"b"]),
            "b is MSET's value here, not a key"
        );
        run.clear();
        assert!(admit(&mut run, &[b"GET", b"a"]), "a new run");
    }

    #[test]
    fn mset_writes_keys_not_values_and_set_nx_reads() {
        let mut run = Run::default();
        assert!(admit(&mut run, &[b"MSET", b"k1", b"v", b"k2", b"w"]));
        assert!(admit(&mut run, &[b"GET", b"v"]), "v was a value");
        assert!(!admit(&mut run, &[b"EXISTS", b"k2"]));
        run.clear();
        assert!(admit(&mut run, &[b"GET", b"k"]));
        assert!(admit(&mut run, &[b"SET", b"j", b"v", b"NX"]));
        assert!(!admit(&mut run, &[b"SET", b"k", b"v"]), "write after read");
        assert!(!admit(&mut run, &[b"SET", b"j", b"v"]), "NX read j");
    }

    #[test]
    fn expiry_commands_read_and_write_their_key() {
        let reads_and_writes: [&[&[u8]]; 9] = [
            &[b"EXPIRE", b"k", b"10"],
            &[b"PEXPIREAT", b"k", b"10"],
            &[b"PERSIST", b"k"],
            &[b"GETEX", b"k"],
            &[b"GETDEL", b"k"],
            &[b"GETSET", b"k", b"v"],
            &[b"SETNX", b"k", b"v"],
            &[b"SET", b"k", b"v", b"KEEPTTL"],
            &[b"UNLINK", b"j", b"k"],
        ];
        for command in reads_and_writes {
            let name = String::from_utf8_lossy(command[0]);
            let mut run = Run::default();
            assert!(admit(&mut run, &[b"SET", b"k", b"1"]));
            assert!(!admit(&mut run, command), "{name} reads k after a write");
            run.clear();
            assert!(admit(&mut run, &[b"GET", b"k"]));
            assert!(!admit(&mut run, command), "{name} writes k after a read");
        }
        for reads in [
            &[b"TTL" as &[u8], b"k"][..],
            &[b"PEXPIRETIME", b"k"],
            &[b"STRLEN", b"k"],
            &[b"TYPE", b"k"],
        ] {
            let mut run = Run::default();
            assert!(admit(&mut run, &[b"GET", b"k"]));
            let name = String::from_utf8_lossy(reads[0]);
            assert!(admit(&mut run, reads), "{name} only reads");
            assert!(
                !admit(&mut run, &[b"SETEX", b"k", b"5", b"v"]),
                "SETEX writes k"
            );
        }
    }

    #[test]
    fn huge_multi_key_commands_wait_instead_of_scanning_long() {
        let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("k{i}").into_bytes()).collect();
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        let mut mset: Vec<&[u8]> = vec![b"MSET"];
        for key in &keys {
            mget.push(key);
            mset.extend([b"other" as &[u8], b"v"]);
        }
        let mut run = Run::default();
        assert!(admit(&mut run, &mset), "the first command always runs");
        assert!(
            !admit(&mut run, &mget),
            "1000 x 1000 comparisons: waits, though no key conflicts"
        );
        run.clear();
        assert!(admit(&mut run, &mget));
    }

    #[test]
    fn scans_run_alone() {
        let mut run = Run::default();
        assert!(admit(&mut run, &[b"SET", b"a", b"1"]));
        assert!(!admit(&mut run, &[b"SCAN", b"0"]), "after the write");
        run.clear();
        assert!(admit(&mut run, &[b"SCAN", b"0"]));
        assert!(!admit(&mut run, &[b"GET", b"b"]), "before the next command");
        run.clear();
        assert!(admit(&mut run, &[b"KEYS", b"*"]));
        assert!(!admit(&mut run, &[b"KEYS", b"*"]));
    }

    #[test]
    fn a_run_is_bounded() {
        let mut run = Run::default();
        for _ in 0..RUN_COMMANDS_MAX {
            assert!(admit(&mut run, &[b"GET", b"k"]));
        }
        assert!(!admit(&mut run, &[b"GET", b"k"]));
    }
}
