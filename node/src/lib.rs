//! kcache cache node: the store, the gRPC service, the Redis-protocol port, the admin HTTP endpoints and the
//! wiring that runs them. The binary only parses flags and calls [`server::serve`].

pub mod admin;
pub mod cluster;
pub mod config;
pub mod memory;
pub mod metrics;
pub mod resp;
pub mod security;
pub mod server;
pub mod service;
pub mod store;
