#!/usr/bin/env bash
# Tests the package: it builds (scripts/package.sh), every systemd unit passes
# `systemd-analyze verify`, and it installs in a clean Debian container (the base image is
# built locally by compose/build-base.sh when missing) where `tether --version` and
# `tether lb --check --config /etc/tether/lb.toml` run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/package.sh
deb=$(ls -t target/debian/*.deb | head -1)
echo "test-package: $deb"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
# Verify the units as installed: a root with this host's systemd units (the targets they
# order against) and /bin/kill, with the package unpacked over it, so verify also finds
# /usr/bin/tether. Any output of verify (an unknown key, a missing binary) fails the test.
root=$(mktemp -d /var/tmp/tether-pkg.XXXXXX)
trap 'rm -rf --one-file-system "$root"' EXIT
mkdir -p "$root/lib/systemd/system" "$root/bin"
cp -a /lib/systemd/system/. "$root/lib/systemd/system/"
cp /bin/kill "$root/bin/"
dpkg-deb -x "$deb" "$root"
units=$(cd "$root/lib/systemd/system" && ls tether*.service)
for name in $units; do
  if [[ $name == *@.service ]]; then
    cp "$root/lib/systemd/system/$name" "$root/lib/systemd/system/${name/@/@test}"
    name=${name/@/@test}
  fi
  if ! out=$(systemd-analyze verify --root="$root" --man=no "$root/lib/systemd/system/$name" 2>&1) || [[ -n $out ]]; then
    echo "$out" >&2
    echo "test-package: systemd-analyze verify $name failed" >&2
    exit 1
  fi
  echo "test-package: systemd-analyze verify $name: ok"
done
# The dr drop-in, installed where its header says, over the plain unit.
mkdir -p "$root/etc/systemd/system/tether-lb.service.d"
cp "$root/usr/share/doc/tether/examples/systemd/tether-lb-dr.conf" \
  "$root/etc/systemd/system/tether-lb.service.d/dr.conf"
if ! out=$(systemd-analyze verify --root="$root" --man=no "$root/lib/systemd/system/tether-lb.service" 2>&1) || [[ -n $out ]]; then
  echo "$out" >&2
  echo "test-package: systemd-analyze verify tether-lb.service with the dr drop-in failed" >&2
  exit 1
fi
echo "test-package: systemd-analyze verify tether-lb.service with the dr drop-in: ok"

compose/build-base.sh
image=${TETHER_BASE_IMAGE:-debian:bookworm-slim}
# The slim image tells dpkg to skip docs and man pages; this test wants to see them.
docker run --rm --network none -v "$PWD/$deb:/tmp/tether.deb:ro" "$image" sh -ec '
  rm -f /etc/dpkg/dpkg.cfg.d/docker*
  dpkg -i /tmp/tether.deb >/dev/null
  tether --version
  tether lb --check --config /etc/tether/lb.toml
  tether vrrp --check --config /etc/tether/vrrp.toml
  getent passwd tether >/dev/null
  test -f /usr/share/doc/tether/examples/lb.toml
  ls /usr/share/man/man1/tether-lb.1* >/dev/null
'
echo "test-package: installed and ran in a clean $image container"
