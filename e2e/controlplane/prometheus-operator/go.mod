// Pins the prometheus-operator release whose CRDs (ServiceMonitor, PrometheusRule, ...) the
// real control plane installs, so the operator's optional objects meet their real
// schemas. No Go code: build.sh downloads this module and copies its
// example/prometheus-operator-crd/*.yaml next to the binaries. A module of its own so
// its dependencies do not move the Kubernetes pin in ../go.mod.
module github.com/kcache/kcache/e2e/controlplane/prometheus-operator

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.85.0
