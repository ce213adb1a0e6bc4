//! Replies in RESP2 or RESP3, appended to a connection's output buffer. A connection
//! writes the replies of every command it has read in one go, so a pipeline of a
//! hundred GETs costs one write.

use bytes::{BufMut, BytesMut};

/// The protocol a connection speaks: RESP2 until the client says `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

/// Appends replies to a buffer in the connection's protocol.
#[derive(Debug)]
pub struct Out<'a> {
    pub buf: &'a mut BytesMut,
    pub proto: Proto,
}

impl Out<'_> {
    fn line(&mut self, tag: u8, text: &[u8]) {
        self.buf.reserve(text.len() + 3);
        self.buf.put_u8(tag);
        self.buf.put_slice(text);
        self.buf.put_slice(b"\r\n");
    }

    fn number(&mut self, tag: u8, n: i64) {
        let mut digits = itoa_buf(n);
        let text = digits.as_str();
        self.buf.reserve(text.len() + 3);
        self.buf.put_u8(tag);
        self.buf.put_slice(text.as_bytes());
        self.buf.put_slice(b"\r\n");
        digits.clear();
    }

    pub fn ok(&mut self) {
        self.buf.put_slice(b"+OK\r\n");
    }

    pub fn simple(&mut self, text: &str) {
        self.line(b'+', text.as_bytes());
    }

    /// An error reply; `text` starts with its code (`ERR`, `WRONGTYPE`, ...). CR and LF
    /// would end the reply early, so they become spaces.
    pub fn error(&mut self, text: &str) {
        let clean: String = text
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        self.line(b'-', clean.as_bytes());
    }

    pub fn int(&mut self, n: i64) {
        self.number(b':', n);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.number(b'$', data.len() as i64);
        self.buf.reserve(data.len() + 2);
        self.buf.put_slice(data);
        self.buf.put_slice(b"\r\n");
    }

    /// A nil reply: RESP2's null bulk string, RESP3's null.
    pub fn null(&mut self) {
        match self.proto {
            Proto::Resp2 => self.buf.put_slice(b"$-1\r\n"),
            Proto::Resp3 => self.buf.put_slice(b"_\r\n"),
        }
    }

    pub fn array(&mut self, len: usize) {
        self.number(b'*', len as i64);
    }

    /// A map of `len` pairs: RESP3's map, RESP2's flat array of 2 × `len` items.
    pub fn map(&mut self, len: usize) {
        match self.proto {
            Proto::Resp2 => self.number(b'*', 2 * len as i64),
            Proto::Resp3 => self.number(b'%', len as i64),
        }
    }

    /// A set: RESP3's set type, RESP2's array.
    pub fn set(&mut self, len: usize) {
        match self.proto {
            Proto::Resp2 => self.number(b'*', len as i64),
            Proto::Resp3 => self.number(b'~', len as i64),
        }
    }

    /// Text for people (INFO, CLUSTER NODES): RESP3's verbatim string, RESP2's bulk.
    pub fn verbatim(&mut self, text: &str) {
        match self.proto {
            Proto::Resp2 => self.bulk(text.as_bytes()),
            Proto::Resp3 => {
                self.number(b'=', text.len() as i64 + 4);
                self.buf.put_slice(b"txt:");
                self.buf.put_slice(text.as_bytes());
                self.buf.put_slice(b"\r\n");
            }
        }
    }
}

/// Decimal digits of `n` without a heap allocation per reply.
fn itoa_buf(n: i64) -> Digits {
    let mut out = Digits {
        bytes: [0; 20],
        start: 20,
    };
    let negative = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        out.start -= 1;
        out.bytes[out.start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if negative {
        out.start -= 1;
        out.bytes[out.start] = b'-';
    }
    out
}

struct Digits {
    bytes: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.start..]).unwrap_or("0")
    }
    fn clear(&mut self) {
        self.start = 20;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(proto: Proto, f: impl FnOnce(&mut Out<'_>)) -> String {
        let mut buf = BytesMut::new();
        f(&mut Out {
            buf: &mut buf,
            proto,
        });
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn replies_are_encoded_as_redis_encodes_them() {
        assert_eq!(
            written(Proto::Resp2, |o| o.int(i64::MIN)),
            ":-9223372036854775808\r\n"
        );
        assert_eq!(written(Proto::Resp2, |o| o.int(0)), ":0\r\n");
        assert_eq!(
            written(Proto::Resp2, |o| o.bulk(b"a\r\nb")),
            "$4\r\na\r\nb\r\n"
        );
        assert_eq!(written(Proto::Resp2, |o| o.null()), "$-1\r\n");
        assert_eq!(written(Proto::Resp3, |o| o.null()), "_\r\n");
        assert_eq!(written(Proto::Resp2, |o| o.map(2)), "*4\r\n");
        assert_eq!(written(Proto::Resp3, |o| o.map(2)), "%2\r\n");
        assert_eq!(
            written(Proto::Resp3, |o| o.verbatim("hi")),
            "=6\r\ntxt:hi\r\n"
        );
        assert_eq!(
            written(Proto::Resp2, |o| o.error("ERR a\r\nb")),
            "-ERR a  b\r\n"
        );
    }
}
