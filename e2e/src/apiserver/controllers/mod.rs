//! Controllers that run inside the emulator, as kube-controller-manager's do in a real
//! cluster. They read the store through an in-process subscription and write through the
//! same [`Cluster`](super::cluster::Cluster) API the HTTP handlers use — the shape the
//! StatefulSet, kubelet and EndpointSlice emulation will take.

pub mod gc;
