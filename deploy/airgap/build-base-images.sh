#!/usr/bin/env bash
# Air-gapped path only: builds, from Debian packages and this machine's own
# Rust toolchain, local stand-ins for the public images that deploy/Dockerfile
# and docker-compose.yml name, for hosts that have a Docker engine but no
# access to a container registry. On a normal host, skip this: `docker compose
# up --build` pulls the real images.
#
#   sudo deploy/airgap/engine.sh              # a running dockerd, if none yet
#   sudo deploy/airgap/build-base-images.sh   # the stand-ins, cached
#
# The images, each tagged with exactly the name the Dockerfile or the compose
# file uses, so neither file changes for this path:
# - the Rust build image (`FROM rust:...` in deploy/Dockerfile): a debootstrap
#   bookworm rootfs with gcc and libc6-dev, the host's toolchain of the
#   channel in rust-toolchain.toml (which must match the tag's version),
#   cargo-chef at the version deploy/Dockerfile pins, and the host's CA
#   bundle at /etc/ssl/certs/ca-certificates.crt, so cargo inside a build
#   reaches the crate registry through whatever TLS setup the host has;
# - the runtime (`FROM gcr.io/distroless/cc...`): glibc, libgcc, Debian's CA
#   certificates, /etc/passwd with the `nonroot` user (65532) and /tmp; no
#   shell, no package manager, like the real one;
# - HAProxy (`image: haproxy:...`, the stack's balancer): Debian's haproxy,
#   with an entrypoint that runs it as the official image does
#   (master-worker, in the foreground, as the haproxy user);
# - Redis (`image: redis:...` in docker-compose.yml): Debian's redis-server
#   and redis-cli, with an entrypoint that does what the official image's
#   does (drops to the redis user, and turns protected mode off when no
#   config file is given, or the other containers are refused).
# They are stand-ins: Debian's versions, not the tags' (Redis is Debian's
# 7.0, for instance); `docker image inspect` shows what each one is in its
# `org.courtside.airgap.*` labels.
#
# Cache: every image carries a hash of what it is built from (its own recipe
# below, the base image, and for the Rust image the toolchain's version, the
# CA bundle and cargo-chef's version); an image whose hash matches is kept,
# so a re-run takes a second. Only a change to an image's own recipe rebuilds
# it, since a rebuilt Rust image invalidates every cached layer of the
# courtside build. The debootstrap rootfs is imported once as
# courtside-airgap/debian:bookworm-minbase and reused by the other three;
# cargo-chef is compiled once into $COURTSIDE_AIRGAP_CACHE. `--force`
# rebuilds everything.
#
# Needs: root, a running engine (engine.sh), debootstrap, rustup with the
# pinned toolchain, network access to the Debian mirror and crates.io.
# Environment: COURTSIDE_AIRGAP_CACHE (default /var/cache/courtside-airgap),
# COURTSIDE_AIRGAP_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/deploy/airgap"
cache="${COURTSIDE_AIRGAP_CACHE:-/var/cache/courtside-airgap}"
mirror="${COURTSIDE_AIRGAP_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
base_image="courtside-airgap/debian:$suite-minbase"
label=org.courtside.airgap.inputs
force=""
[ "${1:-}" = "--force" ] && force=1

log() { printf 'airgap: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
sha() { sha256sum | cut -c1-16; }

# Legacy builder: the buildx plugin is not part of Debian's docker.io, and
# these builds need nothing BuildKit adds.
export DOCKER_BUILDKIT=0

# --- What to build, read from the files that use it ---------------------------
dockerfile="$root/deploy/Dockerfile"
rust_image=$(awk 'toupper($1) == "FROM" && $2 ~ /^rust:/ {print $2; exit}' "$dockerfile")
runtime_image=$(awk 'toupper($1) == "FROM" && $2 ~ /^gcr\.io\/distroless\/cc/ {print $2; exit}' "$dockerfile")
chef_version=$(sed -n 's/^ARG CARGO_CHEF_VERSION=\([0-9.]*\).*/\1/p' "$dockerfile" | head -n 1)
redis_image=$(sed -n 's/^ *image: *"\{0,1\}\(redis:[^" ]*\).*/\1/p' "$root/docker-compose.yml" | head -n 1)
haproxy_image=$(sed -n 's/^ *image: *"\{0,1\}\(haproxy:[^" ]*\).*/\1/p' "$root/docker-compose.yml" | head -n 1)
channel=$(sed -n 's/^channel *= *"\(.*\)".*/\1/p' "$root/rust-toolchain.toml")
[ -n "$rust_image" ] || die "no 'FROM rust:...' in deploy/Dockerfile"
[ -n "$runtime_image" ] || die "no 'FROM gcr.io/distroless/cc...' in deploy/Dockerfile"
[ -n "$chef_version" ] || die "no 'ARG CARGO_CHEF_VERSION=' in deploy/Dockerfile"
[ -n "$redis_image" ] || die "no 'image: redis:...' in docker-compose.yml"
[ -n "$haproxy_image" ] || die "no 'image: haproxy:...' in docker-compose.yml"
[ -n "$channel" ] || die "no channel in rust-toolchain.toml"
# The stand-in gets the host's toolchain; it must be the one the tag names.
tag_version=${rust_image#rust:}
tag_version=${tag_version%%-*}
case "$channel" in
  "$tag_version" | "$tag_version".*) ;;
  *) die "deploy/Dockerfile builds with $rust_image but rust-toolchain.toml pins $channel: make them agree" ;;
esac

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and docker import need it)"
command -v debootstrap >/dev/null || die "debootstrap is missing: run deploy/airgap/engine.sh first"
timeout 10 docker info >/dev/null 2>&1 || die "no docker engine answers: run deploy/airgap/engine.sh first"
sysroot=$(rustup run "$channel" rustc --print sysroot 2>/dev/null) \
  || die "the pinned toolchain $channel is not installed (rustup toolchain install $channel)"
rustc_version=$("$sysroot/bin/rustc" -vV | tr '\n' ' ')

mkdir -p "$cache"
work=$(mktemp -d "$cache/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# `current NAME HASH`: the image exists and was built from these inputs.
current() {
  [ -z "$force" ] || return 1
  [ "$(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null)" = "$2" ]
}

# --- Debian base: debootstrap once, imported --------------------------------
base_hash=$(printf '%s\n' "$suite" "$mirror" minbase ca-certificates | sha)
if current "$base_image" "$base_hash"; then
  log "$base_image: cached"
else
  log "$base_image: debootstrap $suite (minbase) from $mirror"
  debootstrap --variant=minbase --include=ca-certificates "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  # Package installs in the derived images must not try to start services.
  printf '#!/bin/sh\nexit 101\n' >"$work/rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$work/rootfs/usr/sbin/policy-rc.d"
  tar -C "$work/rootfs" -c . | docker import \
    --change "LABEL $label=$base_hash" \
    --change "LABEL org.courtside.airgap.source=debootstrap-$suite-minbase" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    - "$base_image" >/dev/null
  rm -rf "$work/rootfs"
  log "$base_image: built"
fi
base_id=$(docker image inspect --format '{{.Id}}' "$base_image")

# --- Rust build image ---------------------------------------------------------
rust_dockerfile=$(cat <<EOF
FROM $base_image
# The linker and C runtime rustc links against; nothing else.
RUN apt-get update \\
 && apt-get install -y --no-install-recommends gcc libc6-dev \\
 && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
COPY cargo-chef /usr/local/cargo/bin/cargo-chef
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN for tool in /usr/local/rust/bin/*; do ln -s "\$tool" /usr/local/cargo/bin/; done \\
 && cargo --version && cargo chef --version
EOF
)
ca_hash=$(sha </etc/ssl/certs/ca-certificates.crt)
rust_hash=$(printf '%s\n' "$rust_dockerfile" "$base_id" "$rustc_version" "$chef_version" "$ca_hash" | sha)
if current "$rust_image" "$rust_hash"; then
  log "$rust_image: cached"
else
  chef_root="$cache/cargo-chef-$chef_version-$channel"
  if [ ! -x "$chef_root/bin/cargo-chef" ]; then
    log "cargo-chef $chef_version: compiling once with $channel (cached in $chef_root)"
    rm -rf "$chef_root"
    # Outside any workspace, so no rust-toolchain.toml or lockfile interferes.
    (cd "$work" && rustup run "$channel" cargo install --quiet --locked cargo-chef \
      --version "$chef_version" --root "$chef_root" --target-dir "$work/chef-target")
    rm -rf "$work/chef-target"
  fi
  log "$rust_image: toolchain from $sysroot"
  ctx="$work/rust"
  mkdir -p "$ctx/toolchain"
  # The compiler and standard library; the docs (share/) stay out.
  for part in bin lib libexec etc; do
    if [ -e "$sysroot/$part" ]; then cp -a "$sysroot/$part" "$ctx/toolchain/"; fi
  done
  cp "$chef_root/bin/cargo-chef" "$ctx/cargo-chef"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  printf '%s\n' "$rust_dockerfile" \
    "LABEL $label=$rust_hash org.courtside.airgap.source=\"debootstrap $suite, host toolchain $channel, cargo-chef $chef_version, host CA bundle\"" \
    >"$ctx/Dockerfile"
  docker build --network host -t "$rust_image" "$ctx" >"$work/rust-build.log" 2>&1 \
    || { tail -n 30 "$work/rust-build.log" >&2; die "building $rust_image failed"; }
  rm -rf "$ctx"
  log "$rust_image: built"
fi

# --- Runtime: distroless cc stand-in ------------------------------------------
# Assembled in a throwaway container of the base image (the files of the two
# library packages, minus docs, locales and iconv modules), streamed out as a
# tar and imported: ownership survives, and no shell is left in.
# shellcheck disable=SC2016 # expanded by the container's shell
runtime_script='
  out=/out
  mkdir -p $out/usr/bin $out/usr/lib $out/usr/lib64 $out/usr/sbin $out/etc/ssl/certs $out/home/nonroot $out/tmp
  ln -s usr/bin $out/bin; ln -s usr/lib $out/lib; ln -s usr/lib64 $out/lib64; ln -s usr/sbin $out/sbin
  dpkg -L libc6 libgcc-s1 | while read -r path; do
    case "$path" in /usr/share/*|*/gconv/*) continue ;; esac
    if [ -f "$path" ] || [ -L "$path" ]; then cp -a --parents "$path" $out; fi
  done
  cp /etc/ssl/certs/ca-certificates.crt $out/etc/ssl/certs/
  printf "%s\n" "root:x:0:0:root:/root:/sbin/nologin" "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin" \
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >$out/etc/passwd
  printf "%s\n" "root:x:0:" "nobody:x:65534:" "nonroot:x:65532:" >$out/etc/group
  printf "%s\n" "passwd: files" "group: files" "hosts: files dns" >$out/etc/nsswitch.conf
  chown 65532:65532 $out/home/nonroot
  chmod 1777 $out/tmp
  tar -C $out -c .
'
runtime_changes=(
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'
  --change 'USER 65532:65532'
  --change 'WORKDIR /home/nonroot'
)
runtime_hash=$(printf '%s\n' "$runtime_script" "${runtime_changes[@]}" "$base_id" | sha)
if current "$runtime_image" "$runtime_hash"; then
  log "$runtime_image: cached"
else
  log "$runtime_image: glibc, libgcc, CA certificates, nonroot user"
  docker run --rm --network none "$base_image" sh -euc "$runtime_script" | docker import \
    "${runtime_changes[@]}" \
    --change "LABEL $label=$runtime_hash org.courtside.airgap.source=\"libc6 and libgcc-s1 of debootstrap $suite\"" \
    - "$runtime_image" >/dev/null
  log "$runtime_image: built"
fi

# `stand_in IMAGE DOCKERFILE ENTRYPOINT WHAT SOURCE`: a Debian package's
# image with an entrypoint script of this folder, rebuilt only when the
# recipe, the script or the base image changes.
stand_in() {
  local image=$1 dockerfile=$2 entrypoint=$3 what=$4 source=$5 hash ctx name
  name=${image%%:*}
  hash=$(printf '%s\n' "$dockerfile" "$(cat "$entrypoint")" "$base_id" | sha)
  if current "$image" "$hash"; then
    log "$image: cached"
    return
  fi
  log "$image: $what"
  ctx="$work/$name"
  mkdir -p "$ctx"
  cp "$entrypoint" "$ctx/docker-entrypoint.sh"
  printf '%s\n' "$dockerfile" "LABEL $label=$hash org.courtside.airgap.source=\"$source\"" >"$ctx/Dockerfile"
  docker build --network host -t "$image" "$ctx" >"$work/$name-build.log" 2>&1 \
    || { tail -n 30 "$work/$name-build.log" >&2; die "building $image failed"; }
  log "$image: built"
}

# --- Redis ----------------------------------------------------------------------
redis_dockerfile=$(cat <<EOF
FROM $base_image
RUN apt-get update \\
 && apt-get install -y --no-install-recommends redis-server redis-tools \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data && chown redis:redis /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
)
stand_in "$redis_image" "$redis_dockerfile" "$here/redis-entrypoint.sh" \
  "Debian's redis-server with the official image's entrypoint behaviour" "redis-server of debootstrap $suite"

# --- HAProxy --------------------------------------------------------------------
haproxy_dockerfile=$(cat <<EOF
FROM $base_image
RUN apt-get update \\
 && apt-get install -y --no-install-recommends haproxy \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /usr/local/etc/haproxy /var/lib/haproxy
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER haproxy
WORKDIR /var/lib/haproxy
STOPSIGNAL SIGUSR1
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF
)
stand_in "$haproxy_image" "$haproxy_dockerfile" "$here/haproxy-entrypoint.sh" \
  "Debian's haproxy with the official image's entrypoint behaviour" "haproxy of debootstrap $suite"

log "ready: $rust_image, $runtime_image, $redis_image, $haproxy_image"
