#!/usr/bin/env bash
# Air-gapped path only: makes sure a Docker engine answers on this host, for
# machines that have no engine running and no container registry (see
# deploy/airgap/README.md). On a normal host with Docker Desktop or a running
# dockerd, it only checks and prints what it found.
#
#   sudo deploy/airgap/engine.sh
#
# What it does, each step only when needed (so a re-run takes a second):
# - installs Debian's docker.io (dockerd), debootstrap (for
#   build-base-images.sh) and docker-compose (v1) when missing;
# - starts `dockerd --iptables=false --bridge=none` in the background (log in
#   /var/log/courtside-dockerd.log) when no engine answers, and waits for it.
#   Without iptables or the default bridge, image builds need the host's
#   network (deploy/airgap/compose.airgap.yml says so to compose), while
#   compose's own bridge networks and published ports work as usual;
# - prints the compose command to use: `docker compose` (v2) if the plugin
#   is there, else `docker-compose`.
# Needs root for the installs and to start dockerd. Leaves dockerd running.
set -euo pipefail

log() { printf 'engine: %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# Bounded waits, in seconds.
readonly DOCKERD_START_TIMEOUT=60
readonly DOCKERD_LOG=/var/log/courtside-dockerd.log

apt_updated=""
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "missing $*; run as root to install it from Debian's packages"
    exit 1
  fi
  if [ -z "$apt_updated" ]; then apt-get update -qq >&2; apt_updated=1; fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

have dockerd || apt_install docker.io
have docker || apt_install docker.io
have debootstrap || apt_install debootstrap
if ! docker compose version >/dev/null 2>&1 && ! have docker-compose; then
  apt_install docker-compose
fi

if engine_answers; then
  log "docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
else
  if [ "$(id -u)" != 0 ]; then
    log "no docker engine answers, and starting dockerd needs root"
    exit 1
  fi
  log "starting dockerd --iptables=false --bridge=none (log: $DOCKERD_LOG)"
  # Its own session, so it outlives this script and the caller's job control.
  setsid dockerd --iptables=false --bridge=none >>"$DOCKERD_LOG" 2>&1 </dev/null &
  deadline=$((SECONDS + DOCKERD_START_TIMEOUT))
  until engine_answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "dockerd did not answer within ${DOCKERD_START_TIMEOUT}s; last lines of its log:"
      tail -n 20 "$DOCKERD_LOG" >&2 || true
      exit 1
    fi
    sleep 1
  done
  log "dockerd started ($(docker version --format '{{.Server.Version}}'))"
fi

if docker compose version >/dev/null 2>&1; then
  echo "docker compose"
else
  echo "docker-compose"
fi
