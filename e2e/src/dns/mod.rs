//! Cluster DNS, as CoreDNS's kubernetes plugin answers it, served by hickory-server on
//! loopback (UDP and TCP) from Services and EndpointSlices it watches as an API client:
//!
//! - `<svc>.<ns>.svc.cluster.local` A: for a headless Service the addresses of its ready
//!   endpoints. There is no kube-proxy here, so a ClusterIP Service's name also resolves
//!   to its ready endpoints rather than to a virtual IP nothing would route.
//! - `<hostname>.<svc>.<ns>.svc.cluster.local` A: a ready endpoint with that hostname
//!   (a StatefulSet pod under its governing Service).
//! - `_<port>._<proto>.<svc>.<ns>.svc.cluster.local` SRV for named ports: one record per
//!   ready endpoint, targeting its hostname (or dashed address), with A records as
//!   additionals.
//! - Other names under the domain: NXDOMAIN; names outside it: REFUSED (no recursion).
//!
//! Answers carry a 5 s TTL, CoreDNS's default for cluster records.

pub mod server;
pub mod zone;

pub use server::serve;
pub use zone::Zone;
