#!/usr/bin/env bash
# Keeps the README's first command true: runs the demo end to end and stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
KCACHE_DEMO_GRPC=127.0.0.1:17000 KCACHE_DEMO_ADMIN=127.0.0.1:17001 scripts/demo.sh --exit
