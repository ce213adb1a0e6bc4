//! kcache's local control plane, for the end-to-end suite and the laptop demo.
//!
//! No kube-apiserver can be installed where kcache is tested, so this crate emulates the
//! parts of Kubernetes kcache touches, faithfully enough that unmodified kube-rs and
//! kubectl clients work against it:
//!
//! - [`apiserver`]: the Kubernetes API (discovery, CRUD, watch, patches, server-side
//!   apply, subresources, CRDs, finalizers, garbage collection, Tables);
//! - [`local`]: the `kcache-local` command (`up` writes a kubeconfig, serves, and runs
//!   the operator).
//!
//! The StatefulSet controller, kubelet, EndpointSlice controller and DNS emulation come
//! next, as in-process controllers over [`apiserver::Cluster`] and its subscriptions.

#![forbid(unsafe_code)]

pub mod apiserver;
pub mod controllers;
pub mod controlplane;
pub mod dns;
pub mod kubelet;
pub mod local;

/// Errors of the local control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding, serving or writing files failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The emulator could not set itself up.
    #[error("API emulator: {0}")]
    Api(#[from] apiserver::ApiError),
    /// The kubeconfig could not be rendered.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] serde_yaml::Error),
    /// Talking to the emulator as a client failed (registering the CRD).
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The operator stopped with an error.
    #[error("operator: {0}")]
    Operator(String),
}
