//go:build tools

// Package tools pins h2spec, the HTTP/2 conformance tester run against the node's
// gRPC port by scripts/checks/h2spec.sh; build.sh builds it from the module cache.
package tools

import _ "github.com/summerwind/h2spec/cmd/h2spec"
