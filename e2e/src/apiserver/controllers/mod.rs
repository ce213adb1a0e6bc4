//! Controllers that run inside the emulator, as kube-controller-manager's do in a real
//! cluster. They read the store through an in-process subscription and write through the
//! same [`Cluster`](super::cluster::Cluster) API the HTTP handlers use. (The StatefulSet
//! and EndpointSlice controllers are API clients instead: [`crate::controllers`].)

pub mod gc;
