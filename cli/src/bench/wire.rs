//! Minimal RESP (Redis) and memcached text-protocol connections: GET and SET only,
//! pipelined by writing a whole batch and then reading its replies in order.
//!
//! Written by hand rather than with the `redis` or `memcache` crates on purpose: those
//! bring their own connection managers, pools and (for memcache) blocking I/O, so the
//! three systems would be driven by different worker models. Here every target runs in
//! the same task, over one socket per connection, with the same batching; the only
//! difference left is the protocol. The parsers accept exactly the replies GET and SET
//! produce and treat anything else as an error.

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{BenchError, Op};

/// Socket buffer size: a batch of 16 SETs of 100-byte values fits many times over.
const BUFFER: usize = 64 * 1024;

/// Which text protocol a [`TextConn`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Resp,
    Memcached,
}

/// One TCP connection to Redis or memcached.
#[derive(Debug)]
pub(super) struct TextConn {
    protocol: Protocol,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl TextConn {
    pub(super) async fn connect(addr: &str, protocol: Protocol) -> Result<Self, BenchError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(BenchError::io(addr))?;
        stream.set_nodelay(true).map_err(BenchError::io(addr))?;
        let (read, writer) = stream.into_split();
        Ok(Self {
            protocol,
            reader: BufReader::with_capacity(BUFFER, read),
            writer,
            out: Vec::with_capacity(BUFFER),
            line: Vec::with_capacity(256),
        })
    }

    /// Sends every op, then reads every reply; true for a GET hit or a stored SET.
    pub(super) async fn run(&mut self, ops: &[Op], value: &Bytes) -> Result<Vec<bool>, BenchError> {
        self.out.clear();
        for op in ops {
            match self.protocol {
                Protocol::Resp => encode_resp(&mut self.out, op, value),
                Protocol::Memcached => encode_memcached(&mut self.out, op, value),
            }
        }
        self.writer.write_all(&self.out).await?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let ok = match self.protocol {
                Protocol::Resp => self.read_resp().await?,
                Protocol::Memcached => self.read_memcached(op.set).await?,
            };
            results.push(ok);
        }
        Ok(results)
    }

    async fn read_line(&mut self) -> Result<&[u8], BenchError> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            return Err(BenchError::Protocol(
                "the server closed the connection".into(),
            ));
        }
        Ok(self.line.strip_suffix(b"\r\n").unwrap_or(&self.line))
    }

    /// Skips `len` bytes of data and the CRLF after them.
    async fn skip(&mut self, len: usize) -> Result<(), BenchError> {
        let mut rest = len + 2;
        let mut scratch = [0u8; 512];
        while rest > 0 {
            let n = rest.min(scratch.len());
            self.reader.read_exact(&mut scratch[..n]).await?;
            rest -= n;
        }
        Ok(())
    }

    async fn read_resp(&mut self) -> Result<bool, BenchError> {
        let line = self.read_line().await?;
        match line.first() {
            Some(b'+') => Ok(true),
            Some(b'$') if line == b"$-1" => Ok(false),
            Some(b'$') => {
                let len = parse_len(&line[1..])?;
                self.skip(len).await?;
                Ok(true)
            }
            _ => Err(unexpected(line)),
        }
    }

    async fn read_memcached(&mut self, set: bool) -> Result<bool, BenchError> {
        let line = self.read_line().await?;
        if set {
            return match line {
                b"STORED" => Ok(true),
                _ => Err(unexpected(line)),
            };
        }
        if line == b"END" {
            return Ok(false);
        }
        // VALUE <key> <flags> <bytes>
        let len = match line.strip_prefix(b"VALUE ") {
            Some(rest) => parse_len(rest.rsplit(|&b| b == b' ').next().unwrap_or(b""))?,
            None => return Err(unexpected(line)),
        };
        self.skip(len).await?;
        match self.read_line().await? {
            b"END" => Ok(true),
            other => Err(unexpected(other)),
        }
    }
}

fn encode_resp(out: &mut Vec<u8>, op: &Op, value: &Bytes) {
    let key = &op.key;
    if op.set {
        out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
        bulk(out, key);
        bulk(out, value);
    } else {
        out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
        bulk(out, key);
    }
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn encode_memcached(out: &mut Vec<u8>, op: &Op, value: &Bytes) {
    if op.set {
        out.extend_from_slice(b"set ");
        out.extend_from_slice(&op.key);
        out.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(b"get ");
        out.extend_from_slice(&op.key);
        out.extend_from_slice(b"\r\n");
    }
}

fn parse_len(digits: &[u8]) -> Result<usize, BenchError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unexpected(digits))
}

fn unexpected(line: &[u8]) -> BenchError {
    BenchError::Protocol(format!(
        "unexpected reply {:?}",
        String::from_utf8_lossy(&line[..line.len().min(80)])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_and_memcached_encodings_are_what_the_servers_expect() {
        let value = Bytes::from_static(b"vv");
        let get = Op {
            set: false,
            key: Bytes::from_static(b"k1"),
        };
        let set = Op {
            set: true,
            key: Bytes::from_static(b"k1"),
        };
        let mut out = Vec::new();
        encode_resp(&mut out, &get, &value);
        encode_resp(&mut out, &set, &value);
        assert_eq!(
            out,
            b"*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$2\r\nvv\r\n"
        );
        out.clear();
        encode_memcached(&mut out, &get, &value);
        encode_memcached(&mut out, &set, &value);
        assert_eq!(out, b"get k1\r\nset k1 0 0 2\r\nvv\r\n");
    }
}
