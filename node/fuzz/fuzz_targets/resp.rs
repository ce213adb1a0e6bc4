//! Arbitrary bytes as a client's stream into the Redis port's parser, fed in pieces
//! the way reads arrive: it must never panic, never hand out a command beyond its
//! limits, and either take whole commands off the buffer, wait for more, or name a
//! protocol error.
#![no_main]

use bytes::BytesMut;
use kcache_node::resp::parse::{Limits, next_command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so splits fall everywhere.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_bulk: 1024,
        max_args: 64,
        max_inline: 256,
    };
    let step = usize::from(split % 32) + 1;
    let mut buf = BytesMut::new();
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match next_command(&mut buf, &limits) {
                Ok(Some(args)) => {
                    assert!(!args.is_empty() && args.len() <= limits.max_args);
                    assert!(
                        args.iter()
                            .all(|a| a.len() <= limits.max_bulk.max(limits.max_inline))
                    );
                    assert!(buf.len() < before, "a command consumes bytes");
                }
                Ok(None) => {
                    assert!(buf.len() <= before);
                    break;
                }
                Err(_) => return,
            }
        }
    }
});
