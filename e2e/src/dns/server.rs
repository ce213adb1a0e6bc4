//! The DNS server: hickory-server with a handler that answers from the current [`Zone`],
//! and the watches that keep the zone current.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::{A, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use parking_lot::RwLock;

use super::zone::Zone;

/// TTL of every answer (CoreDNS's default for cluster records).
pub const TTL: u32 = 5;

/// Answers queries from a shared zone.
#[derive(Debug, Clone, Default)]
pub struct Handler {
    zone: Arc<RwLock<Zone>>,
}

impl Handler {
    /// A handler over `zone`.
    pub fn new(zone: Arc<RwLock<Zone>>) -> Self {
        Self { zone }
    }

    /// Answer and additional records for one question, and the response code.
    pub fn answer(
        &self,
        name: &Name,
        qtype: RecordType,
    ) -> (ResponseCode, Vec<Record>, Vec<Record>) {
        let key = name.to_ascii().trim_end_matches('.').to_lowercase();
        if !Zone::covers(&key) {
            return (ResponseCode::Refused, Vec::new(), Vec::new());
        }
        let zone = self.zone.read();
        if !zone.has_name(&key) {
            return (ResponseCode::NXDomain, Vec::new(), Vec::new());
        }
        let a_records = |host: &str, owner: &Name| -> Vec<Record> {
            zone.a
                .get(host)
                .into_iter()
                .flatten()
                .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))))
                .collect()
        };
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match qtype {
            RecordType::A | RecordType::ANY => answers = a_records(&key, name),
            RecordType::SRV => {
                for srv in zone.srv.get(&key).into_iter().flatten() {
                    let Ok(target) = Name::from_ascii(format!("{}.", srv.target)) else {
                        continue;
                    };
                    answers.push(Record::from_rdata(
                        name.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, 100, srv.port, target.clone())),
                    ));
                    additionals.extend(a_records(&srv.target, &target));
                }
            }
            _ => {}
        }
        (ResponseCode::NoError, answers, additionals)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.recursion_available = false;
        let (code, answers, additionals) = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => {
                self.answer(&Name::from(info.query.name()), info.query.query_type())
            }
            Ok(_) => (ResponseCode::NotImp, Vec::new(), Vec::new()),
            Err(_) => (ResponseCode::FormErr, Vec::new(), Vec::new()),
        };
        metadata.response_code = code;
        let response = MessageResponseBuilder::from_message_request(request).build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS response failed");
                let mut metadata = Metadata::new(
                    request.metadata.id,
                    MessageType::Response,
                    request.metadata.op_code,
                );
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Serves cluster DNS on `addr` (UDP and TCP, the same port) until `stop` is set,
/// keeping the zone current from the API. Returns the bound address at once.
pub async fn serve(
    client: Client,
    addr: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let (udp, tcp) = bind_pair(addr).await?;
    let bound = udp.local_addr()?;
    let zone = Arc::new(RwLock::new(Zone::default()));
    let mut server = hickory_server::Server::new(Handler::new(zone.clone()));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    let task = tokio::spawn(async move {
        let follow = follow(client, zone);
        tokio::pin!(follow);
        tokio::select! {
            _ = &mut follow => {}
            _ = stop.changed() => {}
        }
        let _ = server.shutdown_gracefully().await;
    });
    Ok((bound, task))
}

/// A UDP socket and a TCP listener on the same port. With port 0 the kernel picks the
/// UDP port, which a TCP connection may already hold as its local port (the real
/// control plane's leg of the e2e suite has hundreds): then another port is tried.
async fn bind_pair(
    addr: SocketAddr,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    const ATTEMPTS: usize = 20;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        match tokio::net::TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS => {}
            Err(e) => return Err(e),
        }
    }
}

/// Rebuilds `zone` on every change of Services or EndpointSlices.
async fn follow(client: Client, zone: Arc<RwLock<Zone>>) {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let service_events = reflector(
        services_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ())
    .boxed();
    let slice_events = reflector(
        slices_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ())
    .boxed();
    let mut events = futures::stream::select(service_events, slice_events);
    while events.next().await.is_some() {
        let services: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let slices: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
        let next = Zone::build(&services, &slices);
        let mut current = zone.write();
        if *current != next {
            *current = next;
        }
    }
}
