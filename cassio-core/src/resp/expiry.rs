//! Keys' expiry on the Redis port. TTL, PTTL, EXPIRETIME and PEXPIRETIME
//! read it; EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST and GETEX change
//! it. A change reads the key's cell and writes the value again with the new
//! expiry (a tombstone, for an expiry already past) at a timestamp newer
//! than the cell's. Like SET NX it is not atomic: a SET of the same key
//! from another client between the read and the write can be overwritten
//! by the value read.

use std::sync::Arc;

use super::commands::{Command, redis_integer, text};
use super::reply::Reply;
use crate::coordinator::ConsistencyLevel;
use crate::net::Transport;
use crate::node::shared::NodeShared;
use crate::storage::{Cell, CellValue};

/// How an expiry argument counts time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExpiryUnit {
    /// From now on, in seconds (EX, EXPIRE, SETEX).
    Seconds,
    /// From now on, in milliseconds (PX, PEXPIRE, PSETEX).
    Milliseconds,
    /// A Unix time in seconds (EXAT, EXPIREAT).
    UnixSeconds,
    /// A Unix time in milliseconds (PXAT, PEXPIREAT).
    UnixMilliseconds,
}

impl ExpiryUnit {
    /// SET's and GETEX's expiry options, by name in upper case.
    pub(crate) fn of_option(option: &str) -> Option<ExpiryUnit> {
        match option {
            "EX" => Some(ExpiryUnit::Seconds),
            "PX" => Some(ExpiryUnit::Milliseconds),
            "EXAT" => Some(ExpiryUnit::UnixSeconds),
            "PXAT" => Some(ExpiryUnit::UnixMilliseconds),
            _ => None,
        }
    }

    /// The expiry, in ms since the epoch, that `amount` of this unit gives
    /// at `now_ms`, with Redis's errors: not an integer, or (with
    /// `positive`, as SET and SETEX require) not above zero, or past what a
    /// signed 64-bit ms count holds. It may be in the past.
    pub(crate) fn expiry_ms(
        self,
        amount: &[u8],
        now_ms: u64,
        command: &str,
        positive: bool,
    ) -> Result<i64, Reply> {
        let Some(amount) = redis_integer(amount) else {
            return Err(Reply::err("ERR value is not an integer or out of range"));
        };
        let ms = match self {
            ExpiryUnit::Seconds | ExpiryUnit::UnixSeconds => amount.checked_mul(1000),
            ExpiryUnit::Milliseconds | ExpiryUnit::UnixMilliseconds => Some(amount),
        };
        let from_ms = match self {
            ExpiryUnit::Seconds | ExpiryUnit::Milliseconds => i64::try_from(now_ms).ok(),
            ExpiryUnit::UnixSeconds | ExpiryUnit::UnixMilliseconds => Some(0),
        };
        ms.filter(|_| !positive || amount > 0)
            .and_then(|ms| ms.checked_add(from_ms?))
            .ok_or_else(|| Reply::err(format!("ERR invalid expire time in '{command}' command")))
    }
}

/// EXPIRE's conditions (Redis 7): NX, only a key without expiry; XX, only
/// one with; GT, only a later expiry; LT, only an earlier one (no expiry
/// counts as later than any).
#[derive(Debug, Default, PartialEq)]
struct Conditions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl Conditions {
    fn parse(options: &[&[u8]]) -> Result<Conditions, Reply> {
        let mut conditions = Conditions::default();
        for option in options {
            match text(option).to_ascii_uppercase().as_str() {
                "NX" => conditions.nx = true,
                "XX" => conditions.xx = true,
                "GT" => conditions.gt = true,
                "LT" => conditions.lt = true,
                _ => {
                    return Err(Reply::err(format!(
                        "ERR Unsupported option {}",
                        text(option)
                    )));
                }
            }
        }
        if conditions.nx && (conditions.xx || conditions.gt || conditions.lt) {
            return Err(Reply::err(
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            ));
        }
        if conditions.gt && conditions.lt {
            return Err(Reply::err(
                "ERR GT and LT options at the same time are not compatible",
            ));
        }
        Ok(conditions)
    }

    /// Whether a key expiring at `current` (None: never) takes `new`.
    fn allow(&self, current: Option<u64>, new: i64) -> bool {
        let new = u64::try_from(new).unwrap_or(0);
        match current {
            None => !self.xx && !self.gt,
            Some(current) => !self.nx && (!self.gt || new > current) && (!self.lt || new < current),
        }
    }
}

/// What GETEX does to the key it reads.
#[derive(Debug, PartialEq)]
enum GetexChange {
    Nothing,
    Persist,
    ExpireAt(i64),
}

fn getex_change(options: &[&[u8]], now_ms: u64) -> Result<GetexChange, Reply> {
    let option = |i: usize| text(options[i]).to_ascii_uppercase();
    match options.len() {
        0 => Ok(GetexChange::Nothing),
        1 if option(0) == "PERSIST" => Ok(GetexChange::Persist),
        2 => match ExpiryUnit::of_option(&option(0)) {
            Some(unit) => unit
                .expiry_ms(options[1], now_ms, "getex", true)
                .map(GetexChange::ExpireAt),
            None => Err(Reply::err("ERR syntax error")),
        },
        _ => Err(Reply::err("ERR syntax error")),
    }
}

impl<T: Transport> NodeShared<T> {
    /// A key's live cell at `level`, or the error reply.
    pub(super) async fn read_cell(
        self: &Arc<Self>,
        key: &[u8],
        level: ConsistencyLevel,
    ) -> Result<Option<Cell>, Reply> {
        let mut reads = self.coordinate_cell_reads(&[key], level).await;
        match reads.pop() {
            Some(Ok(cell)) => Ok(cell),
            Some(Err(answer)) => Err(super::commands::failure(*answer)),
            None => Err(Reply::err("ERR internal: a read got no answer")),
        }
    }

    /// Writes `cell`'s value again, expiring at `expires_at_ms` (never for
    /// `None`; a time not after now deletes it), at a timestamp after the
    /// cell's.
    async fn rewrite_expiry(
        self: &Arc<Self>,
        key: &[u8],
        cell: Cell,
        expires_at_ms: Option<i64>,
        drawn_timestamp: u64,
        level: ConsistencyLevel,
    ) -> Result<(), Reply> {
        let timestamp = self.rewrite_timestamp(drawn_timestamp, cell.timestamp);
        let now_ms = (self.clock)();
        let rewritten = match expires_at_ms.map(|at| u64::try_from(at).unwrap_or(0)) {
            Some(at) if at <= now_ms => Cell::tombstone(timestamp),
            expires_at_ms => Cell {
                timestamp,
                expires_at_ms,
                value: cell.value,
            },
        };
        super::commands::written(self.coordinate_write(key.to_vec(), rewritten, level).await)
    }

    /// TTL, PTTL, EXPIRETIME, PEXPIRETIME, EXPIRE, PEXPIRE, EXPIREAT,
    /// PEXPIREAT, PERSIST or GETEX, well-formed, at `level`; a write uses
    /// `drawn_timestamp` if that is newer than the key's cell.
    pub(crate) async fn expiry_command(
        self: &Arc<Self>,
        command: Command,
        args: &[&[u8]],
        level: ConsistencyLevel,
        drawn_timestamp: u64,
    ) -> Reply {
        let now_ms = (self.clock)();
        let (key, name) = (args[1], command.name());
        let expire_unit = match command {
            Command::Expire => Some(ExpiryUnit::Seconds),
            Command::Pexpire => Some(ExpiryUnit::Milliseconds),
            Command::Expireat => Some(ExpiryUnit::UnixSeconds),
            Command::Pexpireat => Some(ExpiryUnit::UnixMilliseconds),
            _ => None,
        };
        // Arguments are checked before the key is read, as Redis does.
        let expire = match expire_unit {
            Some(unit) => match (
                Conditions::parse(&args[3..]),
                unit.expiry_ms(args[2], now_ms, name, false),
            ) {
                (Ok(conditions), Ok(at)) => Some((at, conditions)),
                (Err(reply), _) | (_, Err(reply)) => return reply,
            },
            None => None,
        };
        let getex = match command {
            Command::Getex => match getex_change(&args[2..], now_ms) {
                Ok(change) => Some(change),
                Err(reply) => return reply,
            },
            _ => None,
        };
        let cell = match self.read_cell(key, level).await {
            Ok(cell) => cell,
            Err(reply) => return reply,
        };
        let now_ms = (self.clock)();
        let remaining_ms = |at: u64| at.saturating_sub(now_ms) as i64;
        match command {
            Command::Ttl | Command::Pttl | Command::Expiretime | Command::Pexpiretime => {
                Reply::Integer(match cell.map(|c| c.expires_at_ms) {
                    None => -2,
                    Some(None) => -1,
                    Some(Some(at)) => match command {
                        Command::Ttl => (remaining_ms(at) + 500) / 1000,
                        Command::Pttl => remaining_ms(at),
                        Command::Expiretime => (at / 1000) as i64,
                        _ => at as i64,
                    },
                })
            }
            Command::Persist => match cell {
                Some(cell) if cell.expires_at_ms.is_some() => {
                    match self
                        .rewrite_expiry(key, cell, None, drawn_timestamp, level)
                        .await
                    {
                        Ok(()) => Reply::Integer(1),
                        Err(reply) => reply,
                    }
                }
                _ => Reply::Integer(0),
            },
            Command::Getex => {
                let Some(cell) = cell else {
                    return Reply::Bulk(None);
                };
                let value = match &cell.value {
                    CellValue::Value(value) => value.clone(),
                    CellValue::Tombstone => return Reply::Bulk(None),
                };
                let expires_at_ms = match getex {
                    Some(GetexChange::ExpireAt(at)) => Some(at),
                    Some(GetexChange::Persist) if cell.expires_at_ms.is_some() => None,
                    _ => return Reply::bulk(value),
                };
                match self
                    .rewrite_expiry(key, cell, expires_at_ms, drawn_timestamp, level)
                    .await
                {
                    Ok(()) => Reply::bulk(value),
                    Err(reply) => reply,
                }
            }
            _ => {
                let (Some(cell), Some((at, conditions))) = (cell, expire) else {
                    return Reply::Integer(0);
                };
                if !conditions.allow(cell.expires_at_ms, at) {
                    return Reply::Integer(0);
                }
                match self
                    .rewrite_expiry(key, cell, Some(at), drawn_timestamp, level)
                    .await
                {
                    Ok(()) => Reply::Integer(1),
                    Err(reply) => reply,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(reply: Reply) -> String {
        match reply {
            Reply::Error(e) => e,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn expiry_arguments_count_as_redis_counts_them() {
        let now_ms = 1_000_000;
        let at = |unit: ExpiryUnit, amount: &[u8], positive| {
            unit.expiry_ms(amount, now_ms, "expire", positive)
        };
        assert_eq!(at(ExpiryUnit::Seconds, b"10", false), Ok(1_010_000));
        assert_eq!(at(ExpiryUnit::Milliseconds, b"10", false), Ok(1_000_010));
        assert_eq!(at(ExpiryUnit::UnixSeconds, b"2000", false), Ok(2_000_000));
        assert_eq!(at(ExpiryUnit::UnixMilliseconds, b"5", false), Ok(5));
        assert_eq!(
            at(ExpiryUnit::Seconds, b"-5", false),
            Ok(995_000),
            "EXPIRE takes a time in the past (it deletes the key)"
        );
        assert_eq!(
            error(at(ExpiryUnit::Seconds, b"0", true).unwrap_err()),
            "ERR invalid expire time in 'expire' command",
            "SET and SETEX do not"
        );
        assert_eq!(
            error(at(ExpiryUnit::Seconds, b"9223372036854775", false).unwrap_err()),
            "ERR invalid expire time in 'expire' command",
            "past i64 in ms"
        );
        assert_eq!(
            error(at(ExpiryUnit::Milliseconds, b"9223372036854775807", false).unwrap_err()),
            "ERR invalid expire time in 'expire' command",
            "past i64 once now is added"
        );
        assert_eq!(
            error(at(ExpiryUnit::Seconds, b"1.5", false).unwrap_err()),
            "ERR value is not an integer or out of range"
        );
    }

    #[test]
    fn expire_conditions_follow_redis() {
        let parse = |words: &[&[u8]]| Conditions::parse(words);
        let never = None;
        let at_100 = Some(100);
        let plain = parse(&[]).unwrap();
        assert!(plain.allow(never, 50) && plain.allow(at_100, 50));
        let nx = parse(&[b"nx"]).unwrap();
        assert!(nx.allow(never, 50) && !nx.allow(at_100, 50));
        let xx = parse(&[b"XX"]).unwrap();
        assert!(!xx.allow(never, 50) && xx.allow(at_100, 50));
        let gt = parse(&[b"GT"]).unwrap();
        assert!(!gt.allow(never, 500), "no expiry is later than any");
        assert!(gt.allow(at_100, 101) && !gt.allow(at_100, 100));
        let lt = parse(&[b"LT"]).unwrap();
        assert!(lt.allow(never, 500));
        assert!(lt.allow(at_100, 99) && !lt.allow(at_100, 100));
        let xx_gt = parse(&[b"XX", b"GT"]).unwrap();
        assert!(!xx_gt.allow(never, 500) && xx_gt.allow(at_100, 200));
        assert_eq!(
            error(parse(&[b"NX", b"GT"]).unwrap_err()),
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        );
        assert_eq!(
            error(parse(&[b"GT", b"LT"]).unwrap_err()),
            "ERR GT and LT options at the same time are not compatible"
        );
        assert_eq!(
            error(parse(&[b"KEEP"]).unwrap_err()),
            "ERR Unsupported option KEEP"
        );
    }

    #[test]
    fn getex_takes_one_expiry_or_persist() {
        let now_ms = 1_000;
        let change = |words: &[&[u8]]| getex_change(words, now_ms);
        assert_eq!(change(&[]), Ok(GetexChange::Nothing));
        assert_eq!(change(&[b"persist"]), Ok(GetexChange::Persist));
        assert_eq!(change(&[b"px", b"5"]), Ok(GetexChange::ExpireAt(1_005)));
        assert_eq!(change(&[b"EXAT", b"3"]), Ok(GetexChange::ExpireAt(3_000)));
        assert_eq!(
            error(change(&[b"EX", b"0"]).unwrap_err()),
            "ERR invalid expire time in 'getex' command"
        );
        for words in [
            &[b"EX" as &[u8]][..],
            &[b"PERSIST", b"EX", b"1"],
            &[b"EX", b"1", b"PX", b"1"],
            &[b"KEEPTTL"],
        ] {
            assert_eq!(error(change(words).unwrap_err()), "ERR syntax error");
        }
    }
}
