#!/usr/bin/env bash
# Builds the Debian package into target/debian/: the stripped release binary, systemd units
# (packaging/systemd), man pages and bash/zsh/fish completions (`tether generate`), the
# examples under /usr/share/doc/tether/examples and commented defaults under /etc/tether/
# (conffiles). Installs cargo-deb first when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb" >&2
  cargo install --locked cargo-deb
fi
cargo build --release --locked -p tether
rm -rf target/generated
target/release/tether generate --out target/generated >/dev/null
# Stripped: the release profile keeps line tables for backtraces in development builds.
cargo deb -p tether --no-build --locked --strip
