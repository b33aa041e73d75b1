#!/usr/bin/env bash
# Runs every test of the workspace: unit, loopback integration, and (as root) the
# network-namespace labs. Installs the Debian packages the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
cargo test --workspace --no-fail-fast "$@"
