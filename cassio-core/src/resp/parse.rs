//! Parses client input: RESP arrays of bulk strings (what client libraries
//! send) and inline commands (a line of words, what `nc` or telnet send,
//! quoted and escaped as redis-cli writes them). Arguments are not copied:
//! a parsed command is a list of byte ranges into the input (an inline
//! word's quotes and escapes are undone in place). Input is bounded: an
//! argument longer than the frame limit, too many arguments, or an overlong
//! inline line is a protocol error.

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
/// (and `args` as it was) if more bytes are needed. Only the bytes of an
/// inline command are changed, by undoing its quotes and escapes.
pub(crate) fn parse_command(
    buf: &mut [u8],
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

/// Whitespace between inline words (C's `isspace`, as Redis uses).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// An inline command: words split on whitespace, where a word may be
/// quoted as Redis splits them: in `"..."` the escapes `\n \r \t \b \a
/// \xHH` and `\<any>` (that character); in `'...'` only `\'`. A closing
/// quote must end the word. Each word is unescaped in place (never longer
/// than what it was written as).
fn parse_inline(buf: &mut [u8], args: &mut Vec<Range<usize>>) -> Parsed {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > INLINE_BYTES_MAX {
            Err("too big inline request".into())
        } else {
            Ok(None)
        };
    };
    let end = match newline.checked_sub(1) {
        Some(cr) if buf[cr] == b'\r' => cr,
        _ => newline,
    };
    let unbalanced = || Err("unbalanced quotes in request".to_string());
    let mut read = 0;
    loop {
        while read < end && is_space(buf[read]) {
            read += 1;
        }
        if read == end {
            return Ok(Some(newline + 1));
        }
        let start = read;
        let mut write = read;
        let mut quote = None;
        while read < end {
            let b = buf[read];
            let next = buf.get(read + 1).copied().filter(|_| read + 1 < end);
            let (byte, used) = match (quote, b, next) {
                (None, _, _) if is_space(b) => break,
                (None, b'"' | b'\'', _) => {
                    quote = Some(b);
                    read += 1;
                    continue;
                }
                (Some(q), _, _) if b == q => {
                    if next.is_some_and(|n| !is_space(n)) {
                        return unbalanced();
                    }
                    quote = None;
                    read += 1;
                    break;
                }
                (Some(b'"'), b'\\', Some(b'x')) => {
                    let hex = buf.get(read + 2..read + 4).filter(|_| read + 3 < end);
                    match hex.map(|h| (hex_digit(h[0]), hex_digit(h[1]))) {
                        Some((Some(high), Some(low))) => (high << 4 | low, 4),
                        _ => (b'x', 2),
                    }
                }
                (Some(b'"'), b'\\', Some(escaped)) => {
                    let byte = match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    };
                    (byte, 2)
                }
                (Some(b'\''), b'\\', Some(b'\'')) => (b'\'', 2),
                _ => (b, 1),
            };
            buf[write] = byte;
            write += 1;
            read += used;
        }
        if quote.is_some() {
            return unbalanced();
        }
        args.push(start..write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The arguments of the one command at the front of `input`, and the
    /// bytes it used.
    type Arguments = Vec<Vec<u8>>;

    fn parse(input: &[u8]) -> Result<Option<(Arguments, usize)>, ProtocolError> {
        let mut input = input.to_vec();
        let mut args = Vec::new();
        Ok(parse_command(&mut input, 1024, &mut args)?.map(|used| {
            (
                args.iter().map(|r| input[r.clone()].to_vec()).collect(),
                used,
            )
        }))
    }

    #[test]
    fn arrays_inline_and_partial_input() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\n\x00!\r\n";
        let (args, used) = parse(input).unwrap().unwrap();
        assert_eq!(args, words(&[b"SET", b"k", b"v\r\n\x00!"]));
        assert_eq!(used, input.len());
        let mut ranges = vec![0..1, 1..2];
        assert_eq!(
            parse_command(&mut input[..10].to_vec(), 1024, &mut ranges),
            Ok(None),
            "needs more bytes"
        );
        assert_eq!(ranges, vec![0..1, 1..2], "a partial command adds no ranges");
        let (args, used) = parse(b"get  key\r\nPING\n").unwrap().unwrap();
        assert_eq!((args, used), (words(&[b"get", b"key"]), 10));
        let (args, used) = parse(b" \t \r\n").unwrap().unwrap();
        assert_eq!((args.len(), used), (0, 5), "a blank line is no command");
    }

    fn words(words: &[&[u8]]) -> Arguments {
        words.iter().map(|w| w.to_vec()).collect()
    }

    #[test]
    fn inline_words_may_be_quoted_and_escaped_as_in_redis() {
        let args = |input: &[u8]| parse(input).unwrap().unwrap().0;
        assert_eq!(
            args(b"SET \"k b\" 'c d'\r\n"),
            words(&[b"SET", b"k b", b"c d"])
        );
        assert_eq!(
            args(b"ECHO \"a\\nb\\x41\\\"\\\\\" 'it\\'s'\n"),
            words(&[b"ECHO", b"a\nbA\"\\", b"it's"])
        );
        assert_eq!(args(b"ECHO \"\"\r\n"), words(&[b"ECHO", b""]));
        assert_eq!(
            args(b"ECHO \"\\xZZ\" '\\n'\n"),
            words(&[b"ECHO", b"xZZ", b"\\n"]),
            "not an escape: kept as written"
        );
        for unbalanced in [&b"SET \"abc def\r\n"[..], b"ECHO \"a\"b\n", b"ECHO 'a\n"] {
            assert_eq!(
                parse(unbalanced),
                Err("unbalanced quotes in request".to_string()),
                "{:?}",
                String::from_utf8_lossy(unbalanced)
            );
        }
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
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut args = Vec::new();
            if let Ok(Some(used)) = parse_command(&mut bytes, 1024, &mut args) {
                prop_assert!(used <= bytes.len());
                for r in &args {
                    prop_assert!(r.end <= used);
                }
            }
        }
    }
}
