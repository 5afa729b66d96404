//! Parses client input: RESP2 arrays of bulk strings (what client libraries
//! send) and inline commands (a line of space-separated words, what `nc` or
//! telnet send). Arguments are not copied: a parsed command is a list of
//! byte ranges into the input. Input is bounded: an argument longer than the
//! frame limit, too many arguments, or an overlong inline line is a protocol
//! error.

use std::ops::Range;

/// Why input was refused; the connection is answered `-ERR Protocol error:
/// ...` and closed.
pub(crate) type ProtocolError = String;

/// The bytes one parsed command used; `None`: need more input.
pub(crate) type Parsed = Result<Option<usize>, ProtocolError>;

/// The most arguments one command may have.
const ARGS_MAX: usize = 1024 * 1024;
/// The longest inline command line.
const INLINE_BYTES_MAX: usize = 64 * 1024;
/// A header line (`*<count>` or `$<length>`) longer than this is garbage.
const HEADER_BYTES_MAX: usize = 32;

/// Parses one command from the front of `buf`, pushing the byte range of
/// each argument (within `buf`) onto `args`: `Ok(Some(used))`, or `Ok(None)`
/// (and `args` as it was) if more bytes are needed.
pub(crate) fn parse_command(
    buf: &[u8],
    bulk_bytes_max: usize,
    args: &mut Vec<Range<usize>>,
) -> Parsed {
    let before = args.len();
    let parsed = match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, bulk_bytes_max, args),
        Some(_) => parse_inline(buf, args),
    };
    if !matches!(parsed, Ok(Some(_))) {
        args.truncate(before);
    }
    parsed
}

/// A `\r\n`-terminated line starting at `at`: (line, index after it).
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    match rest.get(end + 1) {
        Some(b'\n') => Some((&rest[..end], at + end + 2)),
        // A bare CR inside a header line: let the number parser refuse it.
        Some(_) => Some((&rest[..end + 1], at + end + 1)),
        None => None,
    }
}

fn number(bytes: &[u8], what: &str) -> Result<i64, ProtocolError> {
    let invalid = || format!("invalid {what} {:?}", String::from_utf8_lossy(bytes));
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(invalid());
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(invalid());
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -n } else { n })
}

/// `Ok(None)` if a header line is still incomplete, an error if it has been
/// growing for longer than any header can be.
fn incomplete(buf: &[u8], at: usize, what: &str) -> Parsed {
    if buf.len() - at > HEADER_BYTES_MAX {
        Err(format!("invalid {what}"))
    } else {
        Ok(None)
    }
}

fn parse_array(buf: &[u8], bulk_bytes_max: usize, args: &mut Vec<Range<usize>>) -> Parsed {
    let Some((header, mut at)) = line(buf, 0) else {
        return incomplete(buf, 0, "multibulk length");
    };
    let count = number(&header[1..], "multibulk length")?;
    if !(0..=ARGS_MAX as i64).contains(&count) {
        return Err(format!("invalid multibulk length {count}"));
    }
    for _ in 0..count {
        let Some((header, next)) = line(buf, at) else {
            return incomplete(buf, at, "bulk length");
        };
        if header.first() != Some(&b'$') {
            return Err(format!(
                "expected '$', got '{}'",
                header.first().map_or(' ', |&b| b as char)
            ));
        }
        let len = number(&header[1..], "bulk length")?;
        if len < 0 || len as usize > bulk_bytes_max {
            return Err(format!("invalid bulk length {len}"));
        }
        let len = len as usize;
        if buf.len() < next + len + 2 {
            return Ok(None);
        }
        if &buf[next + len..next + len + 2] != b"\r\n" {
            return Err("bulk string not terminated by CRLF".into());
        }
        args.push(next..next + len);
        at = next + len + 2;
    }
    Ok(Some(at))
}

fn parse_inline(buf: &[u8], args: &mut Vec<Range<usize>>) -> Parsed {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > INLINE_BYTES_MAX {
            Err("too big inline request".into())
        } else {
            Ok(None)
        };
    };
    let mut word_start = None;
    for (i, &b) in buf[..end].iter().enumerate() {
        match (b.is_ascii_whitespace(), word_start) {
            (false, None) => word_start = Some(i),
            (true, Some(start)) => {
                args.push(start..i);
                word_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = word_start {
        args.push(start..end);
    }
    Ok(Some(end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The arguments of the one command at the front of `input`, and the
    /// bytes it used.
    type Arguments<'a> = Vec<&'a [u8]>;

    fn parse(input: &[u8]) -> Result<Option<(Arguments<'_>, usize)>, ProtocolError> {
        let mut args = Vec::new();
        Ok(parse_command(input, 1024, &mut args)?
            .map(|used| (args.iter().map(|r| &input[r.clone()]).collect(), used)))
    }

    #[test]
    fn arrays_inline_and_partial_input() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\n\x00!\r\n";
        let (args, used) = parse(input).unwrap().unwrap();
        assert_eq!(args, vec![&b"SET"[..], b"k", b"v\r\n\x00!"]);
        assert_eq!(used, input.len());
        let mut ranges = vec![0..1, 1..2];
        assert_eq!(
            parse_command(&input[..10], 1024, &mut ranges),
            Ok(None),
            "needs more bytes"
        );
        assert_eq!(ranges, vec![0..1, 1..2], "a partial command adds no ranges");
        let (args, used) = parse(b"get  key\r\nPING\n").unwrap().unwrap();
        assert_eq!((args, used), (vec![&b"get"[..], b"key"], 10));
        let (args, used) = parse(b" \t \r\n").unwrap().unwrap();
        assert_eq!((args.len(), used), (0, 5), "a blank line is no command");
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(parse(b"*2\r\n:1\r\n").is_err());
        assert!(parse(b"*1\r\n$99999\r\n").is_err(), "over the bulk limit");
        assert!(parse(b"*-5\r\n").is_err());
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*1\r\n$+1\r\na\r\n").is_err());
        assert!(parse(b"*1\r\n$1\r\x00\r\na\r\n").is_err(), "a bare CR");
        assert!(parse(b"*99999999999999999999\r\n").is_err(), "overflow");
        assert!(parse(b"*1\r\n$1\r\nab\r\n").is_err(), "length mismatch");
        assert!(
            parse(&[b'*'; 40]).is_err(),
            "a header line longer than any header"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut args = Vec::new();
            if let Ok(Some(used)) = parse_command(&bytes, 1024, &mut args) {
                prop_assert!(used <= bytes.len());
                for r in &args {
                    prop_assert!(r.end <= used);
                }
            }
        }
    }
}
