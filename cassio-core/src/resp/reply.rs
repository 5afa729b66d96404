//! RESP2 replies and their encoding.

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    Simple(&'static str),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
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

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
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
            Reply::Bulk(None) => out.extend_from_slice(b"$-1"),
            Reply::Bulk(Some(bytes)) => {
                header(out, b'$', bytes.len());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
            }
            Reply::Array(items) => {
                header(out, b'*', items.len());
                out.extend_from_slice(b"\r\n");
                for item in items {
                    item.encode(out);
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

    #[test]
    fn encodes_resp2() {
        let mut out = Vec::new();
        Reply::Array(vec![
            Reply::bulk("a"),
            Reply::Bulk(None),
            Reply::Integer(3),
            Reply::Integer(-12),
            Reply::bulk(vec![7u8; 300]),
            Reply::err("ERR x\r\ny"),
        ])
        .encode(&mut out);
        let mut expected = b"*6\r\n$1\r\na\r\n$-1\r\n:3\r\n:-12\r\n$300\r\n".to_vec();
        expected.extend_from_slice(&[7u8; 300]);
        expected.extend_from_slice(b"\r\n-ERR x  y\r\n");
        assert_eq!(out, expected);
    }
}
