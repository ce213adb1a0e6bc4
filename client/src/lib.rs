//! kcache client: the `kcache.v1` protocol types and an async [`Client`] for one node or a
//! cluster. The `kcache` CLI and benchmark live in the `kcache-cli` crate, so services
//! that link this library do not carry their dependencies.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kcache_client::Error> {
//! use kcache_client::{Client, SetOptions};
//!
//! let client = Client::connect("127.0.0.1:7000").await?;
//! client.set("greeting", "hello", SetOptions::default()).await?;
//! let value = client.get("greeting").await?;
//! assert_eq!(value.map(|v| v.value), Some("hello".into()));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod address;
mod balancer;
mod client;
mod error;
pub mod placement;
pub mod security;
mod transport;
mod types;

pub use client::{
    Client, ClientBuilder, DEFAULT_REFRESH, DEFAULT_RETRIES, DEFAULT_TIMEOUT, INITIAL_BACKOFF,
    MAX_BACKOFF,
};
pub use error::{Error, code_name, timed_out};
pub use security::{Tls, Token};
pub use transport::{ConnectOptions, Connection, PEER_TOKEN_HEADER};
pub use types::{Condition, SetOptions, SetOutcome, Ttl, Value, set_request};

pub mod proto {
    //! Types and stubs generated from `proto/kcache/v1/cache.proto`.
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("kcache.v1");

    /// The encoded `FileDescriptorSet` of the kcache.v1 proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/kcache_descriptor.bin"));
}
