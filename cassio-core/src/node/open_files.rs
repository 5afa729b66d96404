//! The process's limit on open files. A node holds a descriptor for every
//! client and peer connection, every SSTable and its commit log, and a
//! shell's default soft limit (often 1,024) is far below `max_clients`. As
//! redis-server and Go's runtime do, the soft limit is raised to the hard
//! one at start; what is left short is for the operator to raise.

/// Descriptors a node keeps for itself beyond its client connections:
/// peers (a connection per peer and thread), tables, the commit log.
const OPEN_FILES_RESERVED: u64 = 1024;

/// Raises the soft limit on open files to the hard limit; returns the
/// limit now in force (`None` where it is not read: not Linux).
#[cfg(target_os = "linux")]
pub fn raise_open_files_limit() -> std::io::Result<Option<u64>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives here.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(Some(limit.rlim_cur))
}

/// Elsewhere the limit is left as it is.
#[cfg(not(target_os = "linux"))]
pub fn raise_open_files_limit() -> std::io::Result<Option<u64>> {
    Ok(None)
}

/// A warning to log if `limit` leaves too few descriptors for
/// `max_clients` connections and the node's own.
pub fn open_files_shortfall(limit: u64, max_clients: usize) -> Option<String> {
    let needed = (max_clients as u64).saturating_add(OPEN_FILES_RESERVED);
    (limit < needed).then(|| {
        format!(
            "the open-file limit is {limit}, below max_clients ({max_clients}) plus \
             {OPEN_FILES_RESERVED} for peers, tables and the commit log: raise it \
             (ulimit -n, systemd's LimitNOFILE) or lower --max-clients"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise_open_files_limit().unwrap();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "Max open files  SOFT  HARD  files"
        let (soft, hard) = (fields[3], fields[4]);
        assert_eq!(soft, hard, "{line}");
        assert_eq!(soft.parse::<u64>().ok(), limit, "{line}");
    }

    #[test]
    fn a_short_limit_is_named_with_what_to_do() {
        assert_eq!(open_files_shortfall(1_048_576, 10_000), None);
        assert!(open_files_shortfall(u64::MAX, usize::MAX).is_none());
        let warning = open_files_shortfall(1024, 10_000).unwrap();
        assert!(
            warning.contains("is 1024, below max_clients (10000)"),
            "{warning}"
        );
        assert!(warning.contains("ulimit -n"), "{warning}");
    }
}
