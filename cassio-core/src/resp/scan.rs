//! SCAN and KEYS on the Redis port, over the coordinator's range scans
//! (`node/scan.rs`).
//!
//! Redis clients read SCAN's cursor as a number (redis-cli, redis-rs,
//! redis-py, go-redis), while a cassio scan goes on after a key. So the
//! node that answers a page keeps where it stopped under a random number
//! and hands out that number: a cursor is good on the node that issued it
//! (any connection), for [`CURSOR_IDLE_MS`] after its last use, among the
//! [`CURSORS_MAX`] most recently used. An unknown cursor is an error that
//! says to start again from 0; a key is never skipped silently.
//!
//! Keys come in key order, each once per full iteration, as of when its
//! page was read; MATCH filters a page after it is read (a page may come
//! back empty with a cursor to go on), and a pattern's literal prefix
//! narrows the range read. TYPE `string` is every key; any other type
//! none. KEYS reads every page and refuses to answer past [`KEYS_MAX`]
//! keys.

use std::sync::Arc;

use fnv::FnvHashMap;
use parking_lot::Mutex;
use rand::Rng;

use super::commands::{failure, read_level, redis_integer, text};
use super::glob;
use super::reply::Reply;
use crate::coordinator::ConsistencyLevel;
use crate::net::Transport;
use crate::node::SCAN_LIMIT_MAX;
use crate::node::shared::NodeShared;
use crate::proto::{KeyRange, Response};

/// Cursors a node keeps at most; past it the least recently used goes.
pub(crate) const CURSORS_MAX: usize = 10_000;

/// A cursor unused this long is forgotten.
pub(crate) const CURSOR_IDLE_MS: u64 = 10 * 60 * 1000;

/// SCAN's COUNT when none is given, as in Redis.
const COUNT_DEFAULT: u32 = 10;

/// Keys KEYS answers with at most.
pub(crate) const KEYS_MAX: usize = 100_000;

/// Keys KEYS reads per page.
const KEYS_PAGE: u32 = 1000;

/// Cursor numbers stay below 2^53, so clients that hold them as doubles
/// (JavaScript's) keep them exact.
const CURSOR_BOUND: u64 = 1 << 53;

/// Where each SCAN cursor this node handed out goes on, and when it was
/// last used.
#[derive(Default)]
pub(crate) struct ScanCursors(Mutex<FnvHashMap<u64, (KeyRange, u64)>>);

impl ScanCursors {
    /// Keeps `rest` under a new cursor number (never 0) and returns it.
    fn park(&self, rest: KeyRange, now_ms: u64) -> u64 {
        let mut cursors = self.0.lock();
        // Idle cursors are refused when resumed anyway: they are swept only
        // when the table is full, not on every page.
        if cursors.len() >= CURSORS_MAX {
            cursors.retain(|_, (_, used_ms)| now_ms.saturating_sub(*used_ms) < CURSOR_IDLE_MS);
        }
        if cursors.len() >= CURSORS_MAX
            && let Some(oldest) = cursors.iter().min_by_key(|(_, (_, used))| *used)
        {
            let oldest = *oldest.0;
            cursors.remove(&oldest);
        }
        let mut rng = rand::rng();
        loop {
            let cursor = rng.random_range(1..CURSOR_BOUND);
            if let std::collections::hash_map::Entry::Vacant(slot) = cursors.entry(cursor) {
                slot.insert((rest, now_ms));
                return cursor;
            }
        }
    }

    /// Where `cursor` goes on, if this node handed it out and still has it.
    fn resume(&self, cursor: u64, now_ms: u64) -> Option<KeyRange> {
        let mut cursors = self.0.lock();
        let (rest, used_ms) = cursors.get_mut(&cursor)?;
        if now_ms.saturating_sub(*used_ms) >= CURSOR_IDLE_MS {
            cursors.remove(&cursor);
            return None;
        }
        *used_ms = now_ms;
        Some(rest.clone())
    }
}

/// What a SCAN asks for.
struct ScanRequest<'a> {
    cursor: u64,
    pattern: Option<&'a [u8]>,
    count: u32,
    /// TYPE named a type other than string: no key is one.
    other_type: bool,
}

/// Parses `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
fn parse_scan<'a>(args: &[&'a [u8]]) -> Result<ScanRequest<'a>, Reply> {
    let cursor = match redis_integer(args[1]) {
        Some(cursor) if cursor >= 0 => cursor as u64,
        _ => return Err(Reply::err("ERR invalid cursor")),
    };
    let mut request = ScanRequest {
        cursor,
        pattern: None,
        count: COUNT_DEFAULT,
        other_type: false,
    };
    let mut options = args[2..].chunks(2);
    for option in options.by_ref() {
        let [name, value] = option else {
            return Err(Reply::err("ERR syntax error"));
        };
        match text(name).to_ascii_uppercase().as_str() {
            "MATCH" => request.pattern = Some(value),
            "COUNT" => match redis_integer(value) {
                Some(count) if count >= 1 => {
                    request.count = count.min(i64::from(SCAN_LIMIT_MAX)) as u32
                }
                Some(_) => return Err(Reply::err("ERR syntax error")),
                None => return Err(Reply::err("ERR value is not an integer or out of range")),
            },
            "TYPE" => request.other_type = !value.eq_ignore_ascii_case(b"string"),
            _ => return Err(Reply::err("ERR syntax error")),
        }
    }
    Ok(request)
}

/// The range a pattern's keys lie in.
fn range_of(pattern: Option<&[u8]>) -> KeyRange {
    match pattern.map(glob::literal_prefix) {
        Some(prefix) if !prefix.is_empty() => KeyRange::prefix(prefix),
        _ => KeyRange::all(),
    }
}

/// A failed scan as a Redis error (the level counts nodes, not replicas).
fn scan_failure(response: Response) -> Reply {
    match response {
        Response::QuorumNotReached {
            level,
            required,
            received,
        } => Reply::err(format!(
            "UNAVAILABLE consistency level {level} not reached for a scan: {required} nodes must answer, {received} did"
        )),
        other => failure(other),
    }
}

impl<T: Transport> NodeShared<T> {
    /// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
    pub(crate) async fn resp_scan(
        self: &Arc<Self>,
        args: &[&[u8]],
        level: ConsistencyLevel,
    ) -> Reply {
        let request = match parse_scan(args) {
            Ok(request) => request,
            Err(reply) => return reply,
        };
        let now_ms = self.now_ms();
        let range = match request.cursor {
            0 => range_of(request.pattern),
            cursor => match self.scan_cursors.resume(cursor, now_ms) {
                Some(range) => range,
                None => {
                    return Reply::err(format!(
                        "ERR unknown SCAN cursor {cursor}: a cursor is kept for {} minutes after its last use by the node that gave it; start again with SCAN 0",
                        CURSOR_IDLE_MS / 60_000
                    ));
                }
            },
        };
        if request.other_type {
            return Reply::Array(vec![Reply::bulk("0"), Reply::Array(Vec::new())]);
        }
        let (entries, next) = match self
            .coordinate_scan(range.clone(), request.count, read_level(level))
            .await
        {
            Response::Scanned { entries, next } => (entries, next),
            other => return scan_failure(other),
        };
        let keys = entries
            .into_iter()
            .filter(|e| request.pattern.is_none_or(|p| glob::matches(p, &e.key)))
            .map(|e| Reply::Bulk(Some(e.key)))
            .collect();
        let cursor = match next {
            Some(last) => self.scan_cursors.park(range.after(last), now_ms),
            None => 0,
        };
        Reply::Array(vec![Reply::bulk(cursor.to_string()), Reply::Array(keys)])
    }

    /// `KEYS pattern`: every matching key, in key order.
    pub(crate) async fn resp_keys(
        self: &Arc<Self>,
        pattern: &[u8],
        level: ConsistencyLevel,
    ) -> Reply {
        let mut keys = Vec::new();
        let mut range = range_of(Some(pattern));
        loop {
            let (entries, next) = match self
                .coordinate_scan(range.clone(), KEYS_PAGE, read_level(level))
                .await
            {
                Response::Scanned { entries, next } => (entries, next),
                other => return scan_failure(other),
            };
            for entry in entries {
                if glob::matches(pattern, &entry.key) {
                    if keys.len() == KEYS_MAX {
                        return Reply::err(format!(
                            "ERR KEYS matched more than {KEYS_MAX} keys; iterate with SCAN instead"
                        ));
                    }
                    keys.push(Reply::Bulk(Some(entry.key)));
                }
            }
            match next {
                Some(last) => range = range.after(last),
                None => return Reply::Array(keys),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_resume_where_their_page_ended_until_idle_or_evicted() {
        let cursors = ScanCursors::default();
        let rest = KeyRange::all().after(b"k5".to_vec());
        let cursor = cursors.park(rest.clone(), 1_000);
        assert!((1..CURSOR_BOUND).contains(&cursor));
        assert_eq!(cursors.resume(cursor, 2_000), Some(rest.clone()));
        assert_eq!(
            cursors.resume(cursor, 2_000 + CURSOR_IDLE_MS - 1),
            Some(rest),
            "use keeps it alive"
        );
        assert_eq!(cursors.resume(cursor, 2_000 + 3 * CURSOR_IDLE_MS), None);
        assert_eq!(cursors.resume(12345, 0), None, "never handed out");

        let first = cursors.park(KeyRange::all(), 10);
        for i in 0..CURSORS_MAX as u64 {
            cursors.park(KeyRange::all(), 11 + i);
        }
        assert_eq!(cursors.0.lock().len(), CURSORS_MAX, "bounded");
        assert_eq!(
            cursors.resume(first, 20),
            None,
            "the least recently used went"
        );
    }

    #[test]
    fn scan_arguments_are_checked_as_redis_checks_them() {
        fn parse<'a>(args: &[&'a [u8]]) -> Result<(u64, Option<&'a [u8]>, u32), Reply> {
            parse_scan(args).map(|r| (r.cursor, r.pattern, r.count))
        }
        assert_eq!(parse(&[b"SCAN", b"0"]).ok(), Some((0, None, 10)));
        assert_eq!(
            parse(&[b"SCAN", b"7", b"match", b"u*", b"COUNT", b"100"]).ok(),
            Some((7, Some(&b"u*"[..]), 100))
        );
        assert_eq!(
            parse(&[b"SCAN", b"0", b"COUNT", b"99999999"]).ok(),
            Some((0, None, SCAN_LIMIT_MAX))
        );
        let error = |args: &[&[u8]]| match parse_scan(args) {
            Err(Reply::Error(e)) => e,
            _ => panic!("refused"),
        };
        assert_eq!(error(&[b"SCAN", b"x"]), "ERR invalid cursor");
        assert_eq!(error(&[b"SCAN", b"-1"]), "ERR invalid cursor");
        assert_eq!(error(&[b"SCAN", b"0", b"COUNT", b"0"]), "ERR syntax error");
        assert_eq!(
            error(&[b"SCAN", b"0", b"COUNT", b"x"]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(error(&[b"SCAN", b"0", b"MATCH"]), "ERR syntax error");
        assert_eq!(error(&[b"SCAN", b"0", b"LIMIT", b"1"]), "ERR syntax error");
        assert!(parse_scan(&[b"SCAN", b"0", b"TYPE", b"hash"]).is_ok_and(|r| r.other_type));
    }

    #[test]
    fn patterns_narrow_the_range_to_their_literal_prefix() {
        assert_eq!(range_of(Some(b"user:*")), KeyRange::prefix(b"user:"));
        assert_eq!(range_of(Some(b"*:1")), KeyRange::all());
        assert_eq!(range_of(None), KeyRange::all());
    }
}
