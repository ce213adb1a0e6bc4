//! Black-box tests of the Kubernetes API emulator with unmodified clients: raw HTTP,
//! kube-rs (Api, watchers, reflector, Controller, finalizer helper, event recorder),
//! kube-lease-manager and kubectl. One test binary, so the suite links once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apply;
mod custom_resources;
mod kube_api;
mod kube_runtime;
mod kubectl;
mod leases;
mod lifecycle;
mod pods;
mod support;
mod wire;
