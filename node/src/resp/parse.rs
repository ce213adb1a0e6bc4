//! Requests in RESP: arrays of bulk strings (what every client library sends) and
//! inline commands (what a person types into `telnet`). The parser is incremental — it
//! is handed the connection's read buffer and takes whole commands off its front, or
//! says it needs more bytes — and bounded: every length is checked against a limit
//! before anything is reserved for it, so no request can make the node allocate more
//! than the limits allow.
//!
//! Arguments are slices of the read buffer (`Bytes`), so a value is not copied between
//! the socket and the store.

use bytes::{Buf, Bytes, BytesMut};

/// Most arguments one command may carry: MSET/MGET of the largest gRPC batch
/// (10,000 keys, so 20,000 arguments for MSET) plus the command name, with room.
pub const MAX_ARGS: usize = 32 * 1024;
/// Longest inline command, and longest header line (`*<n>` or `$<n>`), as Redis's
/// PROTO_INLINE_MAX_SIZE: a line that long without its CRLF is not RESP.
pub const MAX_INLINE: usize = 64 * 1024;
/// Room above `--max-value-size` for a bulk string: a value at the limit must reach the
/// store, which then names the value limit; anything beyond it is refused here.
pub const BULK_SLACK: usize = 64 * 1024;

/// How far a parser lets a request go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string: the node's value limit plus [`BULK_SLACK`].
    pub max_bulk: usize,
    pub max_args: usize,
    pub max_inline: usize,
}

impl Limits {
    /// The limits for a node that stores values of up to `max_value_size` bytes.
    pub fn for_values(max_value_size: usize) -> Self {
        Self {
            max_bulk: max_value_size.saturating_add(BULK_SLACK),
            max_args: MAX_ARGS,
            max_inline: MAX_INLINE,
        }
    }
}

/// A request that breaks the protocol or a limit. After one the stream cannot be
/// trusted to be in step (where does the next command start?), so the connection
/// answers the error and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidArrayLength,
    #[error("Protocol error: {len} arguments is over the limit of {limit}")]
    TooManyArgs { len: usize, limit: usize },
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error(
        "Protocol error: bulk length {len} is over the limit of {limit} bytes (--max-value-size plus 64 KiB)"
    )]
    BulkTooLong { len: usize, limit: usize },
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: bulk string not followed by CRLF")]
    MissingCrlf,
    #[error("Protocol error: line of over {limit} bytes without CRLF (inline limit)")]
    LineTooLong { limit: usize },
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Takes the next whole command off the front of `buf`: `Ok(Some(args))`, or
/// `Ok(None)` when `buf` holds only part of one (then nothing is consumed, and
/// `buf` has been given the capacity the rest needs). Empty commands (a bare CRLF,
/// `*0`) are skipped.
pub fn next_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let parsed = if first == b'*' {
            multibulk(buf, limits)?
        } else {
            inline(buf, limits)?
        };
        match parsed {
            Parsed::Incomplete => return Ok(None),
            Parsed::Empty => continue,
            Parsed::Command(args) => return Ok(Some(args)),
        }
    }
}

enum Parsed {
    Incomplete,
    /// Consumed, but nothing to run.
    Empty,
    Command(Vec<Bytes>),
}

/// The position of the CRLF ending the line that starts at `from`, or `None` when it
/// has not arrived; a line longer than the limit is an error either way.
fn line_end(buf: &[u8], from: usize, limit: usize) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[from..buf.len().min(from.saturating_add(limit + 2))];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(from + i)),
        None if window.len() > limit => Err(ProtocolError::LineTooLong { limit }),
        None => Ok(None),
    }
}

/// A decimal length of a header line (`-1` allowed), at most 19 digits.
fn parse_len(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn multibulk(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some(end) = line_end(buf, 0, limits.max_inline)? else {
        return Ok(Parsed::Incomplete);
    };
    let count = parse_len(&buf[1..end]).ok_or(ProtocolError::InvalidArrayLength)?;
    if count <= 0 {
        buf.advance(end + 2);
        return Ok(Parsed::Empty);
    }
    let count = usize::try_from(count).map_err(|_| ProtocolError::InvalidArrayLength)?;
    if count > limits.max_args {
        return Err(ProtocolError::TooManyArgs {
            len: count,
            limit: limits.max_args,
        });
    }
    // First pass: find every argument's range without consuming, so an incomplete
    // command leaves the buffer as it was.
    let mut ranges = Vec::with_capacity(count.min(64));
    let mut at = end + 2;
    for _ in 0..count {
        let Some(&tag) = buf.get(at) else {
            return Ok(Parsed::Incomplete);
        };
        if tag != b'$' {
            return Err(ProtocolError::ExpectedBulk(char::from(tag)));
        }
        let Some(end) = line_end(buf, at, limits.max_inline)? else {
            return Ok(Parsed::Incomplete);
        };
        let len = parse_len(&buf[at + 1..end])
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(ProtocolError::InvalidBulkLength)?;
        if len > limits.max_bulk {
            return Err(ProtocolError::BulkTooLong {
                len,
                limit: limits.max_bulk,
            });
        }
        let start = end + 2;
        let stop = start + len;
        if buf.len() < stop + 2 {
            // Make room for the rest of this argument at once, not 8 KiB at a time.
            buf.reserve(stop + 2 - buf.len());
            return Ok(Parsed::Incomplete);
        }
        if &buf[stop..stop + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        ranges.push(start..stop);
        at = stop + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Parsed::Command(
        ranges.into_iter().map(|r| frame.slice(r)).collect(),
    ))
}

fn inline(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some(end) = buf
        .iter()
        .take(limits.max_inline + 1)
        .position(|&b| b == b'\n')
    else {
        if buf.len() > limits.max_inline {
            return Err(ProtocolError::LineTooLong {
                limit: limits.max_inline,
            });
        }
        return Ok(Parsed::Incomplete);
    };
    let line = buf.split_to(end + 1).freeze();
    let text = line.slice(..end);
    let text = text.strip_suffix(b"\r").unwrap_or(&text);
    let args = split_inline(text)?;
    if args.is_empty() {
        return Ok(Parsed::Empty);
    }
    if args.len() > limits.max_args {
        return Err(ProtocolError::TooManyArgs {
            len: args.len(),
            limit: limits.max_args,
        });
    }
    Ok(Parsed::Command(args))
}

/// Splits an inline command on spaces and tabs; `"…"` and `'…'` group words, and
/// inside double quotes `\"`, `\\`, `\n`, `\r`, `\t` are escapes, as redis-cli and
/// Redis read them.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && matches!(line[i], b' ' | b'\t') {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    i += 1;
                    if c == quote {
                        break;
                    }
                    if c == b'\\' && quote == b'"' {
                        let Some(&e) = line.get(i) else {
                            return Err(ProtocolError::UnbalancedQuotes);
                        };
                        i += 1;
                        arg.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            other => other,
                        });
                    } else {
                        arg.push(c);
                    }
                }
                // A closing quote must end the word.
                if line.get(i).is_some_and(|c| !matches!(c, b' ' | b'\t')) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < line.len() && !matches!(line[i], b' ' | b'\t') {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_bulk: 16,
            max_args: 4,
            max_inline: 32,
        }
    }

    fn parse_all(input: &[u8]) -> (Vec<Vec<Bytes>>, Result<(), ProtocolError>, usize) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match next_command(&mut buf, &limits()) {
                Ok(Some(args)) => out.push(args),
                Ok(None) => return (out, Ok(()), buf.len()),
                Err(e) => return (out, Err(e), buf.len()),
            }
        }
    }

    #[test]
    fn pipelined_multibulk_commands_come_out_in_order() {
        let (cmds, result, left) = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(result, Ok(()));
        assert_eq!(left, 0);
        assert_eq!(
            cmds,
            vec![
                vec![Bytes::from("GET"), Bytes::from("a")],
                vec![Bytes::from("PING")]
            ]
        );
    }

    #[test]
    fn a_command_split_at_every_byte_parses_once_whole() {
        let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\n";
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(next_command(&mut buf, &limits()), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
            buf.extend_from_slice(&wire[cut..]);
            let args = next_command(&mut buf, &limits()).unwrap().unwrap();
            assert_eq!(args[2], Bytes::from("v\r\nxy"));
        }
    }

    #[test]
    fn inline_commands_split_on_spaces_and_honour_quotes() {
        let (cmds, result, _) = parse_all(b"SET k \"a b\\n\" \r\nPING\n\r\n");
        assert_eq!(result, Ok(()));
        assert_eq!(
            cmds[0],
            vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("a b\n")]
        );
        assert_eq!(cmds[1], vec![Bytes::from("PING")]);
        assert_eq!(
            parse_all(b"SET k \"ab\r\n").1,
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn each_limit_is_named_before_anything_is_reserved() {
        assert_eq!(
            parse_all(b"*5\r\n").1,
            Err(ProtocolError::TooManyArgs { len: 5, limit: 4 })
        );
        assert_eq!(
            parse_all(b"*1\r\n$17\r\n").1,
            Err(ProtocolError::BulkTooLong { len: 17, limit: 16 })
        );
        assert_eq!(
            parse_all(b"*1\r\n$99999999999999999999\r\n").1,
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(&[b'a'; 40]).1,
            Err(ProtocolError::LineTooLong { limit: 32 })
        );
        assert_eq!(
            parse_all(&[b"*1\r\n$".as_slice(), &[b'1'; 40]].concat()).1,
            Err(ProtocolError::LineTooLong { limit: 32 })
        );
    }

    #[test]
    fn malformed_headers_are_protocol_errors() {
        assert_eq!(
            parse_all(b"*x\r\n").1,
            Err(ProtocolError::InvalidArrayLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n:1\r\n").1,
            Err(ProtocolError::ExpectedBulk(':'))
        );
        assert_eq!(
            parse_all(b"*1\r\n$-1\r\n").1,
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n$1\r\nab\r\n").1,
            Err(ProtocolError::MissingCrlf)
        );
        let (cmds, result, _) = parse_all(b"*0\r\n*-1\r\n\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!((cmds.len(), result), (1, Ok(())));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix of many pseudo-random streams.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let alphabet = b"*$\r\n0123456789-abc \"'\\";
        for _ in 0..2_000 {
            let len = (seed % 48) as usize;
            let stream: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse_all(&stream);
        }
    }
}
