#!/bin/sh
# Entrypoint of the air-gapped Redis stand-in (built by build-base-images.sh),
# doing what the official redis image's docker-entrypoint.sh does:
# - a first argument that is a flag or a .conf file means `redis-server ...`;
# - without a config file, or with one that does not set protected-mode,
#   `--protected-mode no` is added: Redis without a password otherwise
#   refuses every client that is not on loopback, i.e. the other containers;
# - started as root, it makes /data the redis user's and drops to that user.
set -e

case "$1" in
  -* | *.conf) set -- redis-server "$@" ;;
esac

if [ "$1" = redis-server ]; then
  protected_mode=1
  config=""
  if [ -f "${2:-}" ]; then
    config=$2
    if grep -q '^protected-mode' "$config"; then protected_mode=""; fi
  fi
  if [ -n "$protected_mode" ]; then
    shift
    [ -n "$config" ] && shift
    set -- --protected-mode no "$@"
    [ -n "$config" ] && set -- "$config" "$@"
    set -- redis-server "$@"
  fi
  if [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi

exec "$@"
