//! Keys' expiry on the Redis port. TTL, PTTL, EXPIRETIME and PEXPIRETIME
//! read it; EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST and GETEX change
//! it. A change reads the key's cell and writes its value again with the
//! new expiry, at a timestamp just past the cell's: the rewrite replaces the
//! cell read, but a newer write it did not see (made meanwhile, or missed
//! by a read at ONE) wins over it, so a stale read never brings an older
//! value back; the change is then lost, as if it had come first. An expiry
//! already past writes a tombstone instead, as DEL does. Not atomic, as
//! SET NX is not.

use std::sync::Arc;

use super::commands::{Command, redis_integer, text};
use super::reply::Reply;
use crate::coordinator::ConsistencyLevel;
use crate::net::Transport;
use crate::node::shared::NodeShared;
use crate::storage::Cell;

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

/// What GETEX does to the key it reads. The amount is checked only once
/// the key is found, as Redis does (GETEX of a missing key is nil).
#[derive(Debug, PartialEq)]
enum GetexChange<'a> {
    Nothing,
    Persist,
    Expire(ExpiryUnit, &'a [u8]),
}

/// GETEX's options: EX, PX, EXAT or PXAT with an amount, or PERSIST; the
/// same one again replaces it, another one is a syntax error (as Redis).
fn getex_change<'a>(options: &[&'a [u8]]) -> Result<GetexChange<'a>, Reply> {
    let syntax_error = || Reply::err("ERR syntax error");
    let mut change = GetexChange::Nothing;
    let mut i = 0;
    while i < options.len() {
        let option = text(options[i]).to_ascii_uppercase();
        let next = match ExpiryUnit::of_option(&option) {
            Some(unit) => {
                i += 1;
                GetexChange::Expire(unit, options.get(i).ok_or_else(syntax_error)?)
            }
            None if option == "PERSIST" => GetexChange::Persist,
            None => return Err(syntax_error()),
        };
        let same_kind = match (&change, &next) {
            (GetexChange::Nothing, _) | (GetexChange::Persist, GetexChange::Persist) => true,
            (GetexChange::Expire(given, _), GetexChange::Expire(unit, _)) => given == unit,
            _ => false,
        };
        if !same_kind {
            return Err(syntax_error());
        }
        change = next;
        i += 1;
    }
    Ok(change)
}

/// A ms count as Redis replies it (a signed 64-bit integer).
fn reply_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl<T: Transport> NodeShared<T> {
    /// Writes `cell`'s value again, expiring at `expires_at_ms` (never for
    /// `None`), just past the cell ([`NodeShared::rewrite_timestamp`]); an
    /// expiry not after now deletes the key instead, as Redis does.
    async fn rewrite_expiry(
        self: &Arc<Self>,
        key: &[u8],
        cell: &Cell,
        expires_at_ms: Option<i64>,
        drawn_timestamp: u64,
        level: ConsistencyLevel,
    ) -> Result<(), Reply> {
        let now_ms = (self.clock)();
        let rewritten = match expires_at_ms.map(|at| u64::try_from(at).unwrap_or(0)) {
            Some(at) if at <= now_ms => {
                Cell::tombstone(self.delete_timestamp(drawn_timestamp, cell.timestamp))
            }
            expires_at_ms => Cell {
                timestamp: self.rewrite_timestamp(cell.timestamp),
                expires_at_ms,
                value: cell.value.clone(),
            },
        };
        self.write_cell(key, rewritten, level).await
    }

    /// TTL, PTTL, EXPIRETIME, PEXPIRETIME, EXPIRE, PEXPIRE, EXPIREAT,
    /// PEXPIREAT, PERSIST or GETEX, well-formed, at `level`. A delete uses
    /// `drawn_timestamp` (or one past the cell read, if that is newer).
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
        // EXPIRE's arguments are checked before the key is read, as Redis
        // does (conditions first).
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
            Command::Getex => match getex_change(&args[2..]) {
                Ok(change) => change,
                Err(reply) => return reply,
            },
            _ => GetexChange::Nothing,
        };
        let cell = match self.read_cell(key, level).await {
            Ok(cell) => cell,
            Err(reply) => return reply,
        };
        let now_ms = (self.clock)();
        match command {
            Command::Ttl | Command::Pttl | Command::Expiretime | Command::Pexpiretime => {
                Reply::Integer(match cell.map(|c| c.expires_at_ms) {
                    None => -2,
                    Some(None) => -1,
                    Some(Some(at)) => match command {
                        Command::Pttl => reply_ms(at.saturating_sub(now_ms)),
                        Command::Pexpiretime => reply_ms(at),
                        // Seconds are rounded, as Redis rounds them.
                        Command::Ttl => {
                            reply_ms(at.saturating_sub(now_ms).saturating_add(500)) / 1000
                        }
                        _ => reply_ms(at.saturating_add(500)) / 1000,
                    },
                })
            }
            Command::Persist => match cell {
                Some(cell) if cell.expires_at_ms.is_some() => self
                    .rewrite_expiry(key, &cell, None, drawn_timestamp, level)
                    .await
                    .err()
                    .unwrap_or(Reply::Integer(1)),
                _ => Reply::Integer(0),
            },
            Command::Getex => {
                let Some(cell) = cell else {
                    return Reply::Bulk(None);
                };
                let expires_at_ms = match getex {
                    GetexChange::Expire(unit, amount) => {
                        match unit.expiry_ms(amount, now_ms, name, true) {
                            Ok(at) => Some(at),
                            Err(reply) => return reply,
                        }
                    }
                    GetexChange::Persist if cell.expires_at_ms.is_some() => None,
                    GetexChange::Persist | GetexChange::Nothing => {
                        return Reply::Bulk(cell.into_value());
                    }
                };
                self.rewrite_expiry(key, &cell, expires_at_ms, drawn_timestamp, level)
                    .await
                    .err()
                    .unwrap_or_else(|| Reply::Bulk(cell.into_value()))
            }
            _ => {
                let (Some(cell), Some((at, conditions))) = (cell, expire) else {
                    return Reply::Integer(0);
                };
                if !conditions.allow(cell.expires_at_ms, at) {
                    return Reply::Integer(0);
                }
                self.rewrite_expiry(key, &cell, Some(at), drawn_timestamp, level)
                    .await
                    .err()
                    .unwrap_or(Reply::Integer(1))
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
    fn getex_takes_one_kind_of_change() {
        let change = |words: &[&'static [u8]]| getex_change(words);
        assert_eq!(change(&[]), Ok(GetexChange::Nothing));
        assert_eq!(change(&[b"persist"]), Ok(GetexChange::Persist));
        assert_eq!(change(&[b"PERSIST", b"persist"]), Ok(GetexChange::Persist));
        assert_eq!(
            change(&[b"px", b"5"]),
            Ok(GetexChange::Expire(ExpiryUnit::Milliseconds, b"5"))
        );
        assert_eq!(
            change(&[b"EX", b"1", b"ex", b"2"]),
            Ok(GetexChange::Expire(ExpiryUnit::Seconds, b"2")),
            "the same one again replaces it"
        );
        assert_eq!(
            change(&[b"EX", b"0"]),
            Ok(GetexChange::Expire(ExpiryUnit::Seconds, b"0")),
            "the amount is checked once the key is found"
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
