//! Replies and their encoding in either protocol a connection may speak:
//! RESP2 (every connection starts with it) or RESP3 (after `HELLO 3`). The
//! two differ only in how a missing value (null) and a map are sent.

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    pub(crate) fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    Simple(&'static str),
    Error(String),
    Integer(i64),
    /// A string, or `None`: null.
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
    /// Field-value pairs: a map in RESP3, a flat array in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub(crate) fn ok() -> Reply {
        Reply::Simple("OK")
    }

    pub(crate) fn err(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    pub(crate) fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(Some(bytes.into()))
    }

    /// The header of an array of `len` items, for an array whose items are
    /// encoded one by one as they come (EXEC's).
    pub(crate) fn encode_array_header(out: &mut Vec<u8>, len: usize) {
        header(out, b'*', len);
        out.extend_from_slice(b"\r\n");
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>, protocol: Protocol) {
        match self {
            Reply::Simple(s) => {
                out.push(b'+');
                out.extend_from_slice(s.as_bytes());
            }
            Reply::Error(e) => {
                out.push(b'-');
                // An error is one line: never let a message break the framing.
                out.extend(
                    e.bytes()
                        .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
                );
            }
            Reply::Integer(i) => header(out, b':', *i),
            Reply::Bulk(None) => match protocol {
                Protocol::Resp2 => out.extend_from_slice(b"$-1"),
                Protocol::Resp3 => out.push(b'_'),
            },
            Reply::Bulk(Some(bytes)) => {
                header(out, b'$', bytes.len());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
            }
            Reply::Array(items) => {
                header(out, b'*', items.len());
                out.extend_from_slice(b"\r\n");
                for item in items {
                    item.encode(out, protocol);
                }
                return;
            }
            Reply::Map(pairs) => {
                match protocol {
                    Protocol::Resp2 => header(out, b'*', 2 * pairs.len()),
                    Protocol::Resp3 => header(out, b'%', pairs.len()),
                }
                out.extend_from_slice(b"\r\n");
                for (field, value) in pairs {
                    field.encode(out, protocol);
                    value.encode(out, protocol);
                }
                return;
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A type byte and a decimal number: `$5`, `*2`, `:-1` (without `fmt`,
/// which costs more than the rest of a short reply).
fn header(out: &mut Vec<u8>, kind: u8, n: impl itoa::Integer) {
    out.push(kind);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply, protocol: Protocol) -> Vec<u8> {
        let mut out = Vec::new();
        reply.encode(&mut out, protocol);
        out
    }

    #[test]
    fn encodes_resp2() {
        let reply = Reply::Array(vec![
            Reply::bulk("a"),
            Reply::Bulk(None),
            Reply::Integer(3),
            Reply::Integer(-12),
            Reply::bulk(vec![7u8; 300]),
            Reply::err("ERR x\r\ny"),
        ]);
        let mut expected = b"*6\r\n$1\r\na\r\n$-1\r\n:3\r\n:-12\r\n$300\r\n".to_vec();
        expected.extend_from_slice(&[7u8; 300]);
        expected.extend_from_slice(b"\r\n-ERR x  y\r\n");
        assert_eq!(encoded(&reply, Protocol::Resp2), expected);
    }

    #[test]
    fn resp3_differs_only_in_nulls_and_maps() {
        let reply = Reply::Array(vec![
            Reply::Bulk(None),
            Reply::Map(vec![
                (Reply::bulk("proto"), Reply::Integer(3)),
                (Reply::bulk("name"), Reply::Bulk(None)),
            ]),
            Reply::ok(),
        ]);
        assert_eq!(
            encoded(&reply, Protocol::Resp3),
            b"*3\r\n_\r\n%2\r\n$5\r\nproto\r\n:3\r\n$4\r\nname\r\n_\r\n+OK\r\n"
        );
        assert_eq!(
            encoded(&reply, Protocol::Resp2),
            b"*3\r\n$-1\r\n*4\r\n$5\r\nproto\r\n:3\r\n$4\r\nname\r\n$-1\r\n+OK\r\n"
        );
    }
}
