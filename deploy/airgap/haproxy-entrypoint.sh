#!/bin/sh
# Entrypoint of the air-gapped HAProxy stand-in (built by
# build-base-images.sh), doing what the official haproxy image's
# docker-entrypoint.sh does: a first argument that is a flag means
# `haproxy ...`, and haproxy runs in master-worker mode in the foreground
# (`-W -db`), so SIGUSR1 (the image's stop signal) drains it softly.
set -e

case "$1" in
  -*) set -- haproxy "$@" ;;
esac

if [ "$1" = haproxy ]; then
  shift
  set -- haproxy -W -db "$@"
fi

exec "$@"
