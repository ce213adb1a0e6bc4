//! An async client for a kcache cluster: typed calls over the generated stub, spread
//! over the nodes by the balancer (round robin, or straight to a key's owners in
//! smart mode), with a per-call deadline and retries of UNAVAILABLE on the next node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::{future::Future, time::Duration};

use bytes::Bytes;
use tonic::{Code, Request, Response, Status};

use crate::balancer::{Balancer, Discovery};
use crate::security::{Tls, Token};
use crate::transport::Connection;
use crate::{
    Error, SetOptions, SetOutcome, Ttl, Value, address,
    proto::{self, cache_client::CacheClient},
    types::set_request,
};

/// Default per-call deadline: generous for an in-memory cache on a LAN, short enough
/// that a dead node fails a request quickly instead of stalling its caller.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default number of retries after an UNAVAILABLE answer: enough to ride out a node
/// restart or a reconnect, few enough not to pile load on a struggling node.
pub const DEFAULT_RETRIES: u32 = 2;

/// First backoff before a retry; doubled each time. Short because a refused connection
/// is cheap to detect and restarts of an in-memory node take milliseconds.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(25);

/// Ceiling on one backoff, so a large retry count cannot turn into minute-long sleeps.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How often a `dns:///` client re-resolves its name (and a smart client refetches
/// the topology): a pod that became ready takes traffic within this long.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// A handle to a node or a cluster. Cheap to clone; clones share the connections (one
/// HTTP/2 connection per node).
#[derive(Debug, Clone)]
pub struct Client {
    balancer: Arc<Balancer>,
    timeout: Duration,
    retries: u32,
}

/// Configures a [`Client`]; start from [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .connect() is awaited"]
pub struct ClientBuilder {
    addr: String,
    timeout: Duration,
    retries: u32,
    dns_server: Option<SocketAddr>,
    smart: bool,
    refresh: Duration,
    tls: Option<Tls>,
    token: Option<Token>,
}

impl ClientBuilder {
    /// Speak TLS to the nodes. Unless the [`Tls`] names a server name, certificates
    /// are checked against the host of the address given to [`Client::builder`] (for
    /// `dns:///name:port`, `name`), also for the nodes a smart client dials by IP, as
    /// gRPC clients do.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Send this bearer token (`authorization: Bearer <token>`) with every call.
    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// The deadline of each attempt, sent to the node as `grpc-timeout` and also
    /// enforced locally, since tonic's timeout does not cover waiting for a connection.
    /// With retries the worst case is about `(retries + 1) * timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times to retry a call that failed with UNAVAILABLE. Other errors are
    /// never retried (the request may have been applied), and `incr` is never retried
    /// at all: it is not idempotent.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Resolve `dns:///` names with this DNS server rather than the system's.
    pub fn dns_server(mut self, server: SocketAddr) -> Self {
        self.dns_server = Some(server);
        self
    }

    /// Smart routing: fetch the cluster's topology and send each key's calls straight
    /// to its owners, saving the hop through a node that would forward them.
    pub fn smart(mut self, smart: bool) -> Self {
        self.smart = smart;
        self
    }

    /// How often to re-resolve the name (and refetch the topology in smart mode).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// Builds the client. A `host:port` address is not dialed yet, so a client can
    /// exist before its node is up (a connection failure surfaces as
    /// [`Error::Unavailable`] on the first call). A `dns:///` name is resolved now,
    /// and fails here when it has no addresses.
    pub async fn connect(self) -> Result<Client, Error> {
        let uri = address::endpoint_uri(&self.addr)?;
        let host_port = uri.trim_start_matches("http://");
        let (host, port) = host_port
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse().ok()?)))
            .ok_or_else(|| Error::InvalidAddress {
                addr: self.addr.clone(),
                reason: "expected host:port".into(),
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = match self.tls {
            Some(tls) if tls.server_name().is_none() => Some(tls.with_server_name(host)?),
            tls => tls,
        };
        let discovery = Discovery {
            host: host.to_owned(),
            port,
            dns: self.addr.starts_with("dns:///"),
            dns_server: self.dns_server,
            smart: self.smart,
            refresh: self.refresh,
            connect_timeout: self.timeout,
            tls,
            token: self.token,
        };
        Ok(Client {
            balancer: Balancer::start(discovery).await?,
            timeout: self.timeout,
            retries: self.retries,
        })
    }
}

impl Client {
    /// A client for the node at `addr` (`host:port`, `http://host:port` or
    /// `dns:///host:port`) with the default deadline and retries.
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        Client::builder(addr).connect().await
    }

    /// Starts configuring a client for `addr`; see [`Client::connect`] for the forms.
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            addr: addr.into(),
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            dns_server: None,
            smart: false,
            refresh: DEFAULT_REFRESH,
            tls: None,
            token: None,
        }
    }

    /// The generated stub on the next node's connection, for what the typed methods do
    /// not cover, chiefly the `Pipeline` stream. No deadline or retries are applied.
    pub fn raw(&self) -> CacheClient<Connection> {
        self.balancer.pick(None, 0).1
    }

    /// The node addresses calls are spread over now.
    pub fn addresses(&self) -> Vec<String> {
        self.balancer.addresses()
    }

    /// Re-resolves the name and refetches the topology now.
    pub async fn refresh(&self) -> Result<(), Error> {
        self.balancer.refresh().await
    }

    /// Reads `key`; `None` on a miss, which is an answer rather than an error.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Value>, Error> {
        let req = proto::GetRequest { key: key.into() };
        let reply = self
            .call(req, |mut c, r| async move { c.get(r).await })
            .await?;
        Ok(Value::from_reply(reply))
    }

    /// Writes `key`; an unmet condition gives `stored: false` and the current version.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<SetOutcome, Error> {
        let req = set_request(key.into(), value.into(), options);
        let reply = self
            .call(req, |mut c, r| async move { c.set(r).await })
            .await?;
        Ok(reply.into())
    }

    /// Removes `key`, only if its version is `if_version` when given. True if removed.
    pub async fn delete(
        &self,
        key: impl Into<Bytes>,
        if_version: Option<u64>,
    ) -> Result<bool, Error> {
        let req = proto::DeleteRequest {
            key: key.into(),
            if_version,
        };
        let reply = self.call(req, |mut c, r| async move { c.delete(r).await });
        Ok(reply.await?.deleted)
    }

    /// Gives `key` a new TTL without rewriting its value. False when the key is absent.
    pub async fn touch(&self, key: impl Into<Bytes>, ttl: Ttl) -> Result<bool, Error> {
        let req = proto::TouchRequest {
            key: key.into(),
            ttl_ms: ttl.to_millis(),
        };
        let reply = self.call(req, |mut c, r| async move { c.touch(r).await });
        Ok(reply.await?.found)
    }

    /// Adds `delta` to the decimal integer at `key`, starting from `initial` when the key
    /// is absent (`ttl` applies only then). Returns the new value and version.
    pub async fn incr(
        &self,
        key: impl Into<Bytes>,
        delta: i64,
        initial: i64,
        ttl: Ttl,
    ) -> Result<(i64, u64), Error> {
        let req = proto::IncrementRequest {
            key: key.into(),
            delta,
            initial,
            ttl_ms: ttl.to_millis(),
        };
        // Not retried: an UNAVAILABLE after the node applied the add (a connection
        // reset mid-call) would add twice.
        let reply = self.call_with_retries(0, req, |mut c, r| async move { c.increment(r).await });
        let reply = reply.await?;
        Ok((reply.value, reply.version))
    }

    /// Reads many keys in one round trip; the result is in `keys` order.
    pub async fn mget<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Value>>, Error> {
        let req = proto::MultiGetRequest {
            keys: keys.into_iter().map(Into::into).collect(),
        };
        let expected = req.keys.len();
        let reply = self.call(req, |mut c, r| async move { c.multi_get(r).await });
        let values = reply.await?.values;
        check_len("MultiGet", expected, values.len())?;
        Ok(values.into_iter().map(Value::from_reply).collect())
    }

    /// Writes many keys in one round trip; the node validates the whole batch before
    /// writing any of it (a bad item fails the call, naming it). Once writing began,
    /// an item that fails (its owner timed out, say) has its own error in the result,
    /// in `items` order, and the other items are written.
    pub async fn mset<K: Into<Bytes>, V: Into<Bytes>>(
        &self,
        items: impl IntoIterator<Item = (K, V, SetOptions)>,
    ) -> Result<Vec<Result<SetOutcome, Error>>, Error> {
        let items: Vec<_> = items
            .into_iter()
            .map(|(k, v, options)| set_request(k.into(), v.into(), options))
            .collect();
        let expected = items.len();
        let req = proto::MultiSetRequest { items };
        let reply = self.call(req, |mut c, r| async move { c.multi_set(r).await });
        let results = reply.await?.results;
        check_len("MultiSet", expected, results.len())?;
        let timeout = self.timeout;
        Ok(results
            .into_iter()
            .map(|mut result| match result.error.take() {
                Some(e) => Err(Error::from_status(
                    Status::new(Code::from_i32(e.code), e.message),
                    timeout,
                )),
                None => Ok(result.into()),
            })
            .collect())
    }

    /// Counters of the node (or nodes, once it answers for a cluster).
    pub async fn stats(&self) -> Result<proto::StatsResponse, Error> {
        let req = proto::StatsRequest {};
        self.call(req, |mut c, r| async move { c.stats(r).await })
            .await
    }

    /// Members, replication factor and epoch, as the node sees them.
    pub async fn topology(&self) -> Result<proto::TopologyResponse, Error> {
        let req = proto::TopologyRequest {};
        self.call(req, |mut c, r| async move { c.topology(r).await })
            .await
    }

    /// Runs one unary RPC with the deadline, retrying UNAVAILABLE with backoff.
    async fn call<M, T, F, Fut>(&self, message: M, rpc: F) -> Result<T, Error>
    where
        M: Clone + Routed,
        F: Fn(CacheClient<Connection>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_with_retries(self.retries, message, rpc).await
    }

    async fn call_with_retries<M, T, F, Fut>(
        &self,
        retries: u32,
        message: M,
        rpc: F,
    ) -> Result<T, Error>
    where
        M: Clone + Routed,
        F: Fn(CacheClient<Connection>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut backoff = INITIAL_BACKOFF;
        let mut retries_left = retries;
        let mut attempt = 0;
        loop {
            let (_, client) = self.balancer.pick(message.routing_key(), attempt);
            let mut request = Request::new(message.clone());
            request.set_timeout(self.timeout);
            let call = tokio::time::timeout(self.timeout, rpc(client, request));
            let error = match call.await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => Error::from_status(status, self.timeout),
                Err(_elapsed) => Error::Timeout(self.timeout),
            };
            if error.is_retryable() {
                // The next attempt goes to the next node; the list is re-read soon.
                self.balancer.failed();
            }
            if retries_left == 0 || !error.is_retryable() {
                return Err(error);
            }
            retries_left -= 1;
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// A batch reply must match its request one to one, or results would be attributed
/// to the wrong keys.
fn check_len(rpc: &str, expected: usize, got: usize) -> Result<(), Error> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "{rpc} sent {expected} items but got {got} replies"
        )))
    }
}

/// Requests that concern one key, so a smart client can send them to its owners.
pub(crate) trait Routed {
    fn routing_key(&self) -> Option<&[u8]> {
        None
    }
}

macro_rules! routed_by_key {
    ($($request:ty),*) => {$(
        impl Routed for $request {
            fn routing_key(&self) -> Option<&[u8]> {
                Some(&self.key)
            }
        }
    )*};
}

routed_by_key!(
    proto::GetRequest,
    proto::SetRequest,
    proto::DeleteRequest,
    proto::TouchRequest,
    proto::IncrementRequest
);

impl Routed for proto::MultiGetRequest {}
impl Routed for proto::MultiSetRequest {}
impl Routed for proto::StatsRequest {}
impl Routed for proto::TopologyRequest {}
