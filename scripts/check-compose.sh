#!/usr/bin/env bash
# Validate docker-compose.yml (syntax, Compose spec, interpolation) with `docker compose config`.
# Needs only the Compose CLI, no Docker engine. Uses `docker compose` when the docker client has the
# plugin, else the same binary standalone from the per-user cache that npm run setup fills
# (a machine without the docker client: setup does not install one, see scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/pgferry/bin"
FILE=docker-compose.yml

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif [ -x "$CACHE_BIN/docker-compose" ]; then
  compose=("$CACHE_BIN/docker-compose")
else
  printf 'compose:check: ERROR: no Docker Compose v2+ CLI (neither `docker compose` nor %s); run npm run setup\n' "$CACHE_BIN/docker-compose" >&2
  exit 1
fi

if "${compose[@]}" -f "$FILE" config --quiet; then
  printf 'compose:check: %s is valid (%s)\n' "$FILE" "$("${compose[@]}" version --short 2>/dev/null || echo '?')"
else
  printf 'compose:check: ERROR: %s is invalid (see above; reproduce with: %s -f %s config)\n' "$FILE" "${compose[*]}" "$FILE" >&2
  exit 1
fi
