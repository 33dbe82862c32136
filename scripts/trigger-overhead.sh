#!/usr/bin/env bash
# Trigger capture's cost on the source's write throughput, on this machine:
# pgbench (TPC-B-like, 4 clients, 20 s each) on a private cluster with
# wal_level=replica — without triggers, with pgferry's triggers installed
# (capture not running: the trigger cost alone), and with `pgferry up
# --mode trigger` running (triggers + capture reading and deleting events).
# Usage: npm run bench:triggers   (needs what `npm run setup` installs)
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=$(mktemp -d /tmp/pgferry-trig-XXXXXX)
PORT=$((20000 + RANDOM % 20000))
RUNAS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; RUNAS=(runuser -u postgres --); fi
cleanup() { "${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/pg" -m immediate stop >/dev/null 2>&1 || true; [ -n "${UP:-}" ] && kill "$UP" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
"${RUNAS[@]}" "$BIN/initdb" -D "$DIR/pg" -U postgres -A trust --no-sync >/dev/null
cat >> "$DIR/pg/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = replica
shared_buffers = 128MB
CONF
"${RUNAS[@]}" "$BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/pg.log" -w start >/dev/null
URL="postgres://postgres@127.0.0.1:$PORT/postgres"
"$BIN/pgbench" -i -s 10 -q "$URL" >/dev/null 2>&1
run() { "$BIN/pgbench" -c 4 -j 2 -T "${SECONDS_PER_RUN:-20}" -n "$URL" 2>/dev/null | awk '/^tps/ {print $3; exit}'; }
base=$(run)
export PGFERRY_SOURCE_NAME="trigbench$RANDOM" PGFERRY_DATA_DIR="$DIR/data"
node "$ROOT/bin/pgferry.js" init --mode trigger --source "$URL" --tables pgbench_accounts,pgbench_branches,pgbench_tellers,pgbench_history >/dev/null
trig=$(run)
node "$ROOT/bin/pgferry.js" up --mode trigger --source "$URL" --temporal-port $((PORT + 1)) --ui-port $((PORT + 2)) >"$DIR/up.log" 2>&1 &
UP=$!
for _ in $(seq 1 60); do grep -q 'pgferry is running' "$DIR/up.log" && break; sleep 1; done
withcap=$(run)
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (1 - b / a) * 100 }'; }
echo "pgbench TPC-B-like, 4 clients, ${SECONDS_PER_RUN:-20} s, scale 10, wal_level=replica"
echo "  without triggers:            $base tps"
echo "  with pgferry triggers:       $trig tps ($(pct "$base" "$trig")% fewer)"
echo "  triggers + capture running:  $withcap tps ($(pct "$base" "$withcap")% fewer)"
node "$ROOT/bin/pgferry.js" uninstall --yes --source "$URL" >/dev/null
# and the stream this run created
(cd "$ROOT" && node -e "require('amqplib').connect(process.env.PGFERRY_RABBITMQ_URL || 'amqp://guest:guest@127.0.0.1:5672').then(async (c) => { const ch = await c.createChannel(); await ch.deleteQueue('pgferry.$PGFERRY_SOURCE_NAME.changes'); await c.close(); })") || true
