#!/usr/bin/env bash
# pgferry setup for a Debian machine. Idempotent: installs only what is missing,
# says what it did, and stops with a clear message when something cannot be installed.
#   - npm dependencies, then the build (dist/ and the prebundled workflows)
#   - PostgreSQL 15 server binaries (tests start private clusters with them)
#   - RabbitMQ (started if it is not running; streams need 3.9+)
#   - Chromium and promtool (npm test: the Temporal UI browser test, the alerting rules' tests)
#   - the Temporal CLI v1.5.1 (dev server), built with `go install` into a per-user
#     cache, unless `temporal` is on PATH or TEMPORAL_ADDRESS points at a cluster
#   - the Docker Compose CLI v5.0.2 (go install, same cache) unless `docker compose` works:
#     CI validates docker-compose.yml with it (no Docker engine needed)
set -euo pipefail
cd "$(dirname "$0")/.."

TEMPORAL_VERSION=v1.5.1
PG_BIN=/usr/lib/postgresql/15/bin
CACHE_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/pgferry/bin"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly, through sudo, or tell the user exactly what to run.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $*  (run it as root, then run npm run setup again)"
  fi
}

APT_UPDATED=
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* with your system's package manager, then run npm run setup again"
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed (network or sources.list?)"
    APT_UPDATED=1
  fi
  say "installing $* (Debian packages)"
  # policy-rc.d-less containers: do not let package scripts try to start services through systemd
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed; run: sudo apt-get install $*"
}

# --- Node and npm dependencies -------------------------------------------------
node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
  || die "Node.js 20 or newer is required (found $(node --version)); install it from your distribution or nodejs.org"
# `npm install`, not `npm ci`: it installs the locked versions too, but tolerates the lock file lacking
# other platforms' optional builds (e.g. @swc/core-darwin-*), which some registries do not serve and
# which `npm ci` then reports as "lock file out of sync".
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies (npm install, from package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
else
  say "npm dependencies are up to date"
fi

# --- PostgreSQL 15 server ---------------------------------------------------------
if [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ]; then
  say "PostgreSQL 15 server binaries present ($PG_BIN)"
else
  apt_install postgresql-15 postgresql-client-15
  [ -x "$PG_BIN/initdb" ] || die "postgresql-15 installed but $PG_BIN/initdb is missing"
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  die "user 'postgres' is missing (tests run PostgreSQL as that user when run as root); reinstall postgresql-15"
fi

# --- RabbitMQ ------------------------------------------------------------------------
if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  apt_install rabbitmq-server
fi
export PATH="$PATH:/usr/sbin:/sbin"
rabbit_up() { as_root rabbitmqctl -q await_startup --timeout 3 >/dev/null 2>&1 || as_root rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }
if [ -n "${PGFERRY_RABBITMQ_URL:-}" ] && [[ "$PGFERRY_RABBITMQ_URL" != *127.0.0.1* ]] && [[ "$PGFERRY_RABBITMQ_URL" != *localhost* ]]; then
  say "PGFERRY_RABBITMQ_URL points at a remote RabbitMQ; not starting a local one"
elif rabbit_up; then
  say "RabbitMQ is running"
else
  say "starting RabbitMQ (rabbitmq-server -detached)"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
  rabbit_up || die "RabbitMQ did not start; see /var/log/rabbitmq/ and try: sudo rabbitmq-server -detached"
  say "RabbitMQ started"
fi

# --- Chromium and promtool (for npm test) ----------------------------------------------
# The Temporal UI browser test drives Debian's chromium with playwright-core (no browser download);
# the alerting rules shipped in monitoring/ are checked and unit-tested with promtool (Debian's
# prometheus package; its server is not started here).
if command -v chromium >/dev/null 2>&1; then say "Chromium present ($(command -v chromium))"; else apt_install chromium; fi
if command -v promtool >/dev/null 2>&1; then say "promtool present ($(command -v promtool))"; else apt_install prometheus; fi

# --- Temporal CLI (dev server) -------------------------------------------------------
if [ -n "${TEMPORAL_ADDRESS:-}" ]; then
  say "TEMPORAL_ADDRESS=$TEMPORAL_ADDRESS: using that Temporal server (the dev server is still needed for npm test)"
fi
# Go 1.21+ can build it: it fetches the Go 1.25 toolchain the CLI needs (GOTOOLCHAIN=auto) from the module proxy.
go_ok() {
  command -v go >/dev/null 2>&1 || return 1
  local v; v=$(go env GOVERSION 2>/dev/null | sed -E 's/^go([0-9]+)\.([0-9]+).*/\1 \2/')
  set -- $v
  [ "${1:-0}" -gt 1 ] || { [ "${1:-0}" -eq 1 ] && [ "${2:-0}" -ge 21 ]; }
}
no_temporal() {
  local msg="no Temporal CLI: install Go 1.21+ from go.dev/dl (Debian 12's golang-go is too old) and run npm run setup again, or put a 'temporal' binary ($TEMPORAL_VERSION) on PATH"
  if [ -n "${TEMPORAL_ADDRESS:-}" ]; then
    say "WARNING: $msg. pgferry will use TEMPORAL_ADDRESS=$TEMPORAL_ADDRESS, but npm test needs the dev server."
  else
    die "$msg, or set TEMPORAL_ADDRESS to your Temporal server"
  fi
}
if command -v temporal >/dev/null 2>&1; then
  say "Temporal CLI found on PATH: $(command -v temporal)"
elif [ -x "$CACHE_BIN/temporal" ]; then
  say "Temporal CLI present in $CACHE_BIN"
elif go_ok; then
  say "building the Temporal CLI $TEMPORAL_VERSION with go install into $CACHE_BIN (first time: a few minutes)"
  mkdir -p "$CACHE_BIN"
  GOBIN="$CACHE_BIN" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_VERSION" \
    || die "go install github.com/temporalio/cli/cmd/temporal@$TEMPORAL_VERSION failed (see above); or set TEMPORAL_ADDRESS to an existing Temporal server"
  say "Temporal CLI built: $CACHE_BIN/temporal"
else
  no_temporal
fi

# --- Docker Compose CLI (npm run compose:check validates docker-compose.yml) ---------------
# `docker compose config` needs the Compose CLI only, no Docker engine. Debian 12 has no package for it:
# docker-compose-plugin is only in Docker Inc.'s apt repository, and bookworm's docker-compose 1.29.2 is
# the Python v1 tool (`docker-compose`, not `docker compose`; it predates the Compose spec, e.g. `name:`).
# So it is built with `go install`, like the Temporal CLI: github.com/docker/compose/v5 is the Go Compose
# CLI plugin (the v2 line, renumbered). v5.0.2 is pinned because it is the newest release whose go.mod has
# no replace/exclude directives (go install pkg@version refuses those; v2.35.1, v2.40.x and v5.1+ have excludes).
# It is linked as a docker CLI plugin when the docker client exists. The docker client itself is NOT
# installed: bookworm has no client-only package (docker-cli exists only from Debian 13; docker.io brings
# dockerd, containerd and runc and enables a root daemon), and the compose binary works standalone
# (`docker-compose config`), which scripts/check-compose.sh falls back to.
COMPOSE_VERSION=v5.0.2
COMPOSE_MODULE=github.com/docker/compose/v5
COMPOSE_PLUGIN="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose"
compose_cached_ok() { [ "$("$CACHE_BIN/docker-compose" version --short 2>/dev/null)" = "${COMPOSE_VERSION#v}" ]; }
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  say "docker compose found: $(docker compose version 2>/dev/null)"
else
  if compose_cached_ok; then
    say "Docker Compose $COMPOSE_VERSION present in $CACHE_BIN"
  elif go_ok; then
    say "building Docker Compose $COMPOSE_VERSION with go install into $CACHE_BIN (first time: a few minutes)"
    mkdir -p "$CACHE_BIN"
    tmp_gobin=$(mktemp -d)
    # the package is .../cmd, so go install names the binary "cmd"; the Version ldflag is what the release build sets
    GOBIN="$tmp_gobin" go install -trimpath -ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" "$COMPOSE_MODULE/cmd@$COMPOSE_VERSION" \
      || { rm -rf "$tmp_gobin"; die "go install $COMPOSE_MODULE/cmd@$COMPOSE_VERSION failed (see above); or install the Docker Compose plugin (docker-compose-plugin from Docker's apt repository)"; }
    mv -f "$tmp_gobin/cmd" "$CACHE_BIN/docker-compose" && rm -rf "$tmp_gobin"
    compose_cached_ok || die "$CACHE_BIN/docker-compose does not run (expected version $COMPOSE_VERSION)"
    say "Docker Compose built: $CACHE_BIN/docker-compose"
  else
    die "no Docker Compose CLI: install Go 1.21+ from go.dev/dl (Debian 12's golang-go is too old) and run npm run setup again, or install the Docker Compose plugin (docker-compose-plugin from Docker's apt repository)"
  fi
  if ! command -v docker >/dev/null 2>&1; then
    say "no docker client: npm run compose:check uses $CACHE_BIN/docker-compose directly"
  elif [ -e "$COMPOSE_PLUGIN" ] && [ ! -L "$COMPOSE_PLUGIN" ]; then
    say "WARNING: $COMPOSE_PLUGIN exists but 'docker compose' does not work; left as is (npm run compose:check uses $CACHE_BIN/docker-compose)"
  else
    mkdir -p "$(dirname "$COMPOSE_PLUGIN")"
    ln -sfn "$CACHE_BIN/docker-compose" "$COMPOSE_PLUGIN"
    docker compose version >/dev/null 2>&1 || die "linked $COMPOSE_PLUGIN -> $CACHE_BIN/docker-compose but 'docker compose' still fails"
    say "installed the docker CLI plugin: $COMPOSE_PLUGIN -> $CACHE_BIN/docker-compose"
  fi
fi

# --- Build -------------------------------------------------------------------------
say "building pgferry (dist/)"
npm run --silent build
say "done. Run the tests with: npm test   ·   run pgferry with: npx pgferry up --source postgres://… --replica name=postgres://…"
