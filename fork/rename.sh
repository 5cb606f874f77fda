#!/usr/bin/env bash
# Renames the project in this checkout: every "courtside" in file contents
# and paths becomes NAME (Courtside -> Name, COURTSIDE -> NAME), crates,
# binaries, environment variables, metric names, the protobuf package and
# the Grafana dashboard included. Left as they are: the measured results
# under loadtest/results/ (history), and this folder and FORKING.md, which
# are about leaving courtside (delete them once the fork stands).
#
#   fork/rename.sh NAME      NAME: lowercase letters and digits, a letter
#                            first (it becomes a crate, a binary, a protobuf
#                            package and an environment-variable prefix)
#
# Run it on a clean checkout and commit the result; fork/check.sh NAME then
# checks that nothing user-facing still says "courtside". See FORKING.md.
set -euo pipefail

name=${1:-}
if ! [[ $name =~ ^[a-z][a-z0-9]{1,30}$ ]] || [ "$name" = courtside ]; then
  echo "usage: fork/rename.sh NAME (lowercase letters and digits, a letter first, not courtside)" >&2
  exit 2
fi
cd "$(git rev-parse --show-toplevel)"
if [ -n "$(git status --porcelain)" ]; then
  echo "rename: the checkout has uncommitted changes; commit or stash them first" >&2
  exit 1
fi
title=${name^}
upper=${name^^}

# Contents first, then paths: a path's new name is then already the one the
# contents refer to.
git ls-files -z -- ':!loadtest/results/' ':!fork/' ':!FORKING.md' | xargs -0 grep -lIZ -i courtside -- |
  xargs -0 -r sed -i -e "s/courtside/$name/g" -e "s/Courtside/$title/g" -e "s/COURTSIDE/$upper/g"
git ls-files -- ':!loadtest/results/' ':!fork/' ':!FORKING.md' | grep -i courtside | while read -r path; do
  target=$(sed -e "s/courtside/$name/g" -e "s/Courtside/$title/g" <<<"$path")
  mkdir -p "$(dirname "$target")"
  git mv "$path" "$target"
done
# Directories emptied by the moves.
find . -path ./target -prune -o -path ./.git -prune -o -type d -empty -print | xargs -r rmdir -p 2>/dev/null || true

left=$(git grep -l -i courtside -- ':!loadtest/results/' ':!fork/' ':!FORKING.md' || true)
if [ -n "$left" ]; then
  echo "rename: still says courtside:" >&2
  echo "$left" >&2
  exit 1
fi
echo "renamed courtside -> $name in $(git status --porcelain | wc -l) files; review with 'git diff --stat', then fork/check.sh $name"
