#!/usr/bin/env bash
# Checks a checkout renamed with fork/rename.sh: no tracked file still says
# "courtside" (outside loadtest/results/, fork/ and FORKING.md), and the
# all-in-one built under the new name shows none of it to a user: not in
# --help, its log, the dashboard page and its script, the OpenAPI document,
# metrics, health answers, error bodies, or any response header.
#
#   fork/check.sh NAME     NAME: the name given to fork/rename.sh
#
# Builds the debug all-in-one; CARGO_TARGET_DIR is honoured, but give it a
# directory of its own: the renamed copy's crates keep their names (store,
# gateway, ...), and cargo would take their objects for up to date in the
# original checkout's target directory. Run by .ci/run on a renamed clone.
set -euo pipefail

name=${1:-}
[ -n "$name" ] || { echo "usage: fork/check.sh NAME" >&2; exit 2; }
cd "$(git rev-parse --show-toplevel)"
upper=${name^^}
old=court
old+=side # split, so that renaming this file cannot change what it looks for
out=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill -9 "$server" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
failed=0

hits=$(git grep -n -i "$old" -- ':!loadtest/results/' ':!fork/' ':!FORKING.md' || true)
if [ -n "$hits" ]; then
  echo "check: tracked files still say $old:" >&2
  echo "$hits" | head -20 >&2
  failed=1
fi

cargo build --locked -q -p "$name"
bin=${CARGO_TARGET_DIR:-target}/debug/$name
"$bin" --help >"$out/help.txt"

# One simulated match, so the feed and the dashboard have something in them.
env "${upper}_GATEWAY_ADDR=127.0.0.1:0" "${upper}_ANALYTICS_ADDR=127.0.0.1:0" \
  "${upper}_ANALYTICS_METRICS_ADDR=off" "${upper}_SIM_MATCHES=1" "${upper}_SIM_RATE=50" \
  "$bin" >"$out/log.txt" 2>&1 &
server=$!
addr=""
for _ in $(seq 600); do
  addr=$(sed -n 's#.*live dashboard: *http://\([0-9.:]*\)/.*#\1#p' "$out/log.txt" | head -1)
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "check: $name did not start; its output:" >&2
  tail -20 "$out/log.txt" >&2
  exit 1
fi
for _ in $(seq 300); do
  curl -sf -o /dev/null --max-time 1 "http://$addr/readyz" && break
  sleep 0.1
done
sleep 1

n=0
fetch() { # curl arguments; headers and body go to one file each
  n=$((n + 1))
  curl -s -i --max-time 10 "$@" >"$out/http-$n.txt" || echo "check: curl $* failed" >&2
}
for path in / /dashboard/app.js /dashboard/style.css /ops /season /openapi.json /metrics /healthz /readyz \
  /v1/matches /v1/debug/runtime-fit /no/such/route "/v1/bench/compute?n=1000"; do
  fetch "http://$addr$path"
done
fetch -X POST -H 'content-type: application/json' -d '{"seq":' "http://$addr/v1/events"
fetch -X DELETE "http://$addr/v1/matches"
match=$(curl -s "http://$addr/v1/matches" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -1)
[ -n "$match" ] && fetch "http://$addr/v1/matches/$match"

kill -TERM "$server"
wait "$server" || true
server=""

leaks=$(grep -n -i "$old" "$out"/* || true)
if [ -n "$leaks" ]; then
  echo "check: $name still shows $old to its users:" >&2
  echo "$leaks" | sed "s#$out/##" | cut -c1-200 | head -20 >&2
  failed=1
fi
if [ "$failed" = 0 ]; then
  echo "check: $name says nothing of $old (tree, --help, log, $n HTTP answers)"
fi
exit "$failed"
