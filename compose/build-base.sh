#!/usr/bin/env bash
# Builds the base image the compose demo's Dockerfiles start FROM, without a container
# registry: debootstrap a minimal Debian bookworm into a folder, `docker import` it, and tag
# it with the conventional name (debian:bookworm-slim). A user who can pull never needs this
# script: the same Dockerfiles then use the registry's image. Skips all work when an image
# with that tag exists already.
#
#   compose/build-base.sh            # build if missing
#   DEBIAN_MIRROR=http://... compose/build-base.sh
set -euo pipefail

image=${TETHER_BASE_IMAGE:-debian:bookworm-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "build-base: $image exists; nothing to do"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "build-base: debootstrap needs root (or pull $image from a registry instead)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-base: installing debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

root=$(mktemp -d /var/tmp/tether-base.XXXXXX)
# The folder holds a whole root file system; remove it however this script ends.
trap 'rm -rf --one-file-system "$root"' EXIT

echo "build-base: debootstrap bookworm (minbase) from $mirror into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2
  rm -f "$root.log"
  exit 1
}
rm -f "$root.log"

# What the registry's slim image leaves out: docs, man pages, caches, apt lists.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
find "$root/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete 2>/dev/null || true
rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/locale/"* \
  "$root/var/cache/apt/"*.bin "$root/var/lib/apt/lists/"* "$root/var/log/"*.log
# Same sources as the registry's image, so `apt-get install` in a Dockerfile behaves alike.
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
  "$mirror" "$mirror" >"$root/etc/apt/sources.list"

tar -C "$root" --numeric-owner -c . |
  docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
echo "build-base: imported $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
