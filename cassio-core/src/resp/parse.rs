//! Parses client input: RESP2 arrays of bulk strings (what client libraries
//! send) and inline commands (a line of space-separated words, what `nc` or
//! telnet send). Input is bounded: an argument longer than the frame limit,
//! too many arguments, or an overlong inline line is a protocol error.

/// Why input was refused; the connection is answered `-ERR Protocol error:
/// ...` and closed.
pub(crate) type ProtocolError = String;

/// A parsed command's arguments and the bytes it used; `None`: need more input.
pub(crate) type Parsed = Result<Option<(Vec<Vec<u8>>, usize)>, ProtocolError>;

/// The most arguments one command may have.
const ARGS_MAX: usize = 1024 * 1024;
/// The longest inline command line.
const INLINE_BYTES_MAX: usize = 64 * 1024;

/// Parses one command from the front of `buf`: `Ok(Some((args, used)))`,
/// `Ok(None)` if more bytes are needed.
pub(crate) fn parse_command(buf: &[u8], bulk_bytes_max: usize) -> Parsed {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, bulk_bytes_max),
        Some(_) => parse_inline(buf),
    }
}

/// A `\r\n`-terminated line starting at `at`: (line, index after it).
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let end = buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[at..at + end], at + end + 2))
}

fn number(bytes: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("invalid {what} {:?}", String::from_utf8_lossy(bytes)))
}

fn parse_array(buf: &[u8], bulk_bytes_max: usize) -> Parsed {
    let Some((header, mut at)) = line(buf, 0) else {
        return if buf.len() > 32 {
            Err("invalid multibulk length".into())
        } else {
            Ok(None)
        };
    };
    let count = number(&header[1..], "multibulk length")?;
    if !(0..=ARGS_MAX as i64).contains(&count) {
        return Err(format!("invalid multibulk length {count}"));
    }
    let mut args = Vec::with_capacity(count.min(64) as usize);
    for _ in 0..count {
        let Some((header, next)) = line(buf, at) else {
            return if buf.len() - at > 32 {
                Err("invalid bulk length".into())
            } else {
                Ok(None)
            };
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
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Ok(Some((args, at)))
}

fn parse_inline(buf: &[u8]) -> Parsed {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > INLINE_BYTES_MAX {
            Err("too big inline request".into())
        } else {
            Ok(None)
        };
    };
    let text = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let args = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Some((args, end + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn arrays_inline_and_partial_input() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\n\x00!\r\n";
        let (args, used) = parse_command(input, 1024).unwrap().unwrap();
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"k".to_vec(), b"v\r\n\x00!".to_vec()]
        );
        assert_eq!(used, input.len());
        assert_eq!(
            parse_command(&input[..10], 1024).unwrap(),
            None,
            "needs more bytes"
        );
        let (args, used) = parse_command(b"get  key\r\nPING\n", 1024).unwrap().unwrap();
        assert_eq!((args, used), (vec![b"get".to_vec(), b"key".to_vec()], 10));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(parse_command(b"*2\r\n:1\r\n", 1024).is_err());
        assert!(
            parse_command(b"*1\r\n$99999\r\n", 1024).is_err(),
            "over the bulk limit"
        );
        assert!(parse_command(b"*-5\r\n", 1024).is_err());
        assert!(parse_command(b"*x\r\n", 1024).is_err());
        assert!(
            parse_command(b"*1\r\n$1\r\nab\r\n", 1024).is_err(),
            "length mismatch"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_command(&bytes, 1024);
        }
    }
}
