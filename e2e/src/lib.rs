//! kcache's local Kubernetes, for the end-to-end suite and the laptop demo.
//!
//! No cluster can be installed where kcache is tested, so this crate brings up the
//! parts of Kubernetes kcache touches, faithfully enough that unmodified kube-rs and
//! kubectl clients work against them:
//!
//! - [`apiserver`]: an emulated Kubernetes API (discovery, CRUD, watch, patches,
//!   server-side apply, subresources, CRDs, finalizers, garbage collection, Tables);
//! - [`controlplane`]: or the real one — etcd, kube-apiserver and
//!   kube-controller-manager built from their Go modules;
//! - [`controllers`]: StatefulSet and EndpointSlice controllers, for the emulator;
//! - [`kubelet`]: pods as local processes, each on its own address;
//! - [`dns`]: cluster DNS for Services and StatefulSet pods;
//! - [`local`]: the `kcache-local` command (`up`, `demo`) that joins them with the
//!   operator.
//!
//! Everything but the emulator is an ordinary API client, so it runs the same against
//! either control plane.

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
