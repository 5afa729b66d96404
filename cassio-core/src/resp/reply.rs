//! RESP2 replies and their encoding.

use std::io::Write;

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
            // Writing to a Vec cannot fail.
            Reply::Integer(i) => {
                let _ = write!(out, ":{i}");
            }
            Reply::Bulk(None) => out.extend_from_slice(b"$-1"),
            Reply::Bulk(Some(bytes)) => {
                let _ = write!(out, "${}\r\n", bytes.len());
                out.extend_from_slice(bytes);
            }
            Reply::Array(items) => {
                let _ = write!(out, "*{}\r\n", items.len());
                for item in items {
                    item.encode(out);
                }
                return;
            }
        }
        out.extend_from_slice(b"\r\n");
    }
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
            Reply::err("ERR x\r\ny"),
        ])
        .encode(&mut out);
        assert_eq!(out, b"*4\r\n$1\r\na\r\n$-1\r\n:3\r\n-ERR x  y\r\n");
    }
}
