//! Where each call goes. A client holds a list of node addresses — one `host:port`, or
//! every A record of a `dns:///` name (a headless Service: one record per ready pod) —
//! and sends calls round robin over them, moving to the next on UNAVAILABLE. The list
//! is re-resolved periodically and after failures. In smart mode the client also
//! fetches the cluster's topology and sends a key's calls straight to its owners,
//! computed with the nodes' own placement, falling back to round robin.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use parking_lot::{Mutex, RwLock};

use crate::Error;
use crate::placement::{Member, View};
use crate::proto::{TopologyRequest, cache_client::CacheClient};
use crate::security::{Tls, Token};
use crate::transport::{ConnectOptions, Connection};

/// How often a client pings each node it has a connection to.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Failures closer together than this trigger at most one re-resolution.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(500);

/// How a client finds its nodes.
#[derive(Debug, Clone)]
pub(crate) struct Discovery {
    /// Host name or IP literal.
    pub host: String,
    pub port: u16,
    /// Resolve `host` with DNS (a `dns:///` address) rather than dialing it as is.
    pub dns: bool,
    /// Ask this DNS server instead of the system's (tests, local clusters).
    pub dns_server: Option<SocketAddr>,
    pub smart: bool,
    pub refresh: Duration,
    pub connect_timeout: Duration,
    /// TLS of every connection, its server name already settled.
    pub tls: Option<Tls>,
    /// The token every call sends.
    pub token: Option<Token>,
}

#[derive(Debug, Default)]
struct Targets {
    /// Addresses in round-robin order.
    addresses: Vec<String>,
    /// The topology, in smart mode once fetched: members and replication factor.
    topology: Option<(View, usize)>,
}

#[derive(Debug)]
pub(crate) struct Balancer {
    discovery: Discovery,
    resolver: Option<TokioResolver>,
    targets: RwLock<Targets>,
    channels: Mutex<HashMap<String, Connection>>,
    next: AtomicUsize,
    last_refresh: Mutex<Option<Instant>>,
}

impl Balancer {
    /// Resolves the addresses once and starts the periodic refresh.
    pub(crate) async fn start(discovery: Discovery) -> Result<Arc<Self>, Error> {
        let resolver = if discovery.dns && discovery.host.parse::<IpAddr>().is_err() {
            Some(resolver(discovery.dns_server)?)
        } else {
            None
        };
        let balancer = Arc::new(Self {
            discovery,
            resolver,
            targets: RwLock::default(),
            channels: Mutex::default(),
            next: AtomicUsize::new(0),
            last_refresh: Mutex::new(None),
        });
        balancer.refresh().await?;
        if balancer.resolver.is_some() || balancer.discovery.smart {
            tokio::spawn(refresh_periodically(Arc::downgrade(&balancer)));
        }
        Ok(balancer)
    }

    /// Re-reads the address list (and the topology in smart mode).
    pub(crate) async fn refresh(&self) -> Result<(), Error> {
        *self.last_refresh.lock() = Some(Instant::now());
        let port = self.discovery.port;
        let addresses = match &self.resolver {
            None => vec![join(&self.discovery.host, port)],
            Some(resolver) => {
                let lookup = resolver
                    .lookup_ip(self.discovery.host.as_str())
                    .await
                    .map_err(|e| Error::Unavailable {
                        message: format!("resolving {}: {e}", self.discovery.host),
                    })?;
                let mut addresses: Vec<String> = lookup
                    .iter()
                    .map(|ip| SocketAddr::new(ip, port).to_string())
                    .collect();
                addresses.sort();
                addresses
            }
        };
        if addresses.is_empty() {
            return Err(Error::Unavailable {
                message: format!("{} has no addresses", self.discovery.host),
            });
        }
        self.targets.write().addresses = addresses;
        if self.discovery.smart {
            self.refresh_topology().await;
        }
        Ok(())
    }

    async fn refresh_topology(&self) {
        let addresses = self.targets.read().addresses.clone();
        for address in addresses {
            let mut client = self.client(&address);
            let mut request = tonic::Request::new(TopologyRequest {});
            request.set_timeout(self.discovery.connect_timeout);
            if let Ok(reply) = client.topology(request).await {
                let reply = reply.into_inner();
                let members = reply
                    .members
                    .into_iter()
                    .filter(|m| m.ready)
                    .map(|m| Member {
                        id: m.id,
                        address: m.address,
                    })
                    .collect();
                let view = View::new(members);
                let replication = reply.replication_factor.max(1) as usize;
                let mut targets = self.targets.write();
                // The same members keep the view whose slot table is built already
                // (a few milliseconds at tens of members): calls need not pay it again
                // at every refresh.
                let same =
                    matches!(&targets.topology, Some((v, r)) if *v == view && *r == replication);
                if !same {
                    targets.topology = Some((view, replication));
                }
                return;
            }
        }
    }

    /// Re-resolves in the background after a failure, at most every
    /// [`MIN_REFRESH_GAP`].
    pub(crate) fn failed(self: &Arc<Self>) {
        let due = self
            .last_refresh
            .lock()
            .is_none_or(|last| last.elapsed() >= MIN_REFRESH_GAP);
        if due {
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.refresh().await;
            });
        }
    }

    /// The client for attempt `attempt` of a call: for a key in smart mode, its owners
    /// in order; otherwise the next address round robin.
    pub(crate) fn pick(
        &self,
        key: Option<&[u8]>,
        attempt: u32,
    ) -> (String, CacheClient<Connection>) {
        let address = {
            let targets = self.targets.read();
            let owner = key
                .zip(targets.topology.as_ref())
                .and_then(|(key, (view, r))| {
                    let owners = view.owners(key, *r);
                    (!owners.is_empty())
                        .then(|| owners[attempt as usize % owners.len()].address.clone())
                });
            owner.unwrap_or_else(|| {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                targets.addresses[i % targets.addresses.len()].clone()
            })
        };
        let client = self.client(&address);
        (address, client)
    }

    fn client(&self, address: &str) -> CacheClient<Connection> {
        let mut channels = self.channels.lock();
        let connection = channels.entry(address.to_owned()).or_insert_with(|| {
            Connection::new(
                address,
                ConnectOptions {
                    tls: self.discovery.tls.clone(),
                    token: self.discovery.token.clone(),
                    peer_token: None,
                    connect_timeout: self.discovery.connect_timeout,
                    // A node whose host vanished without closing its sockets would
                    // otherwise time out every call sent to it until the kernel gave
                    // up on the connection. Once keepalive drops it, the next call
                    // fails to connect, which is UNAVAILABLE and retried elsewhere.
                    keepalive: Some(KEEPALIVE),
                },
            )
        });
        CacheClient::new(connection.clone())
    }

    /// The addresses calls are spread over now.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.targets.read().addresses.clone()
    }
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, Error> {
    let built = match server {
        Some(server) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                server.ip(),
                true,
                vec![udp, tcp],
            )]);
            let mut builder =
                Resolver::builder_with_config(config, TokioRuntimeProvider::default());
            // Membership changes must show at the next refresh, not after a record's TTL.
            builder.options_mut().cache_size = 0;
            builder.build()
        }
        None => Resolver::builder_tokio().and_then(|mut builder| {
            builder.options_mut().cache_size = 0;
            builder.build()
        }),
    };
    built.map_err(|e| Error::Unavailable {
        message: format!("DNS resolver: {e}"),
    })
}

async fn refresh_periodically(balancer: Weak<Balancer>) {
    loop {
        let Some(interval) = balancer.upgrade().map(|b| b.discovery.refresh) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(balancer) = balancer.upgrade() else {
            return;
        };
        let _ = balancer.refresh().await;
    }
}
