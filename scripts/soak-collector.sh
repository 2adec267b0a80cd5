#!/usr/bin/env bash
# Collector soak and fault run: real nginx under wrk load on loopback, the release collector
# following its log and reporting to a recording Felix, with a rename rotation, a copytruncate
# rotation, a collector restart and a Felix restart during the run. At the end every
# (connection, original IP) pair nginx logged must be at Felix exactly once, and the collector's
# memory must be flat. Prints one verdict line; exits non-zero on FAIL.
#
#   bash scripts/soak-collector.sh
#
# Knobs (environment): SOAK_SECONDS (60), SOAK_CONNECTIONS (76 wrk connections),
# SOAK_WRK_THREADS (2), SOAK_NGINX_WORKERS (1), SOAK_INTERVAL_SECONDS (2), SOAK_DELAY_MS (3).
#
# Why these numbers: every request carries its own X-Forwarded-For, so every request is one
# distinct (connection, IP) pair, and INGRESS_LOG_REQUESTS_PER_INTERVAL=-1 carries all of them.
# The aggregator keeps IPs exact up to 262,144 per interval and 4,096 per connection; at
# 20,000 requests/s, 2 s intervals and 76 connections that is about 40,000 per interval and
# 530 per connection, so even a rate three times higher or a very uneven spread of requests
# over connections stays exact, and every report's INGRESS_DATA value must equal its entries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${SOAK_SECONDS:-60}
CONNECTIONS=${SOAK_CONNECTIONS:-76}
WRK_THREADS=${SOAK_WRK_THREADS:-2}
NGINX_WORKERS=${SOAK_NGINX_WORKERS:-1}
INTERVAL=${SOAK_INTERVAL_SECONDS:-2}
DELAY_MS=${SOAK_DELAY_MS:-3} # pause of each connection between requests: paces wrk to ~20k/s
DEADLINE=60 # seconds any wait on another process may take

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'soak-collector: FAIL: %s\n' "$*"; exit 1; }

ensure_tool() { # command package
  if command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; then return; fi
  say "installing Debian's $2"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "$1 is missing and cannot be installed without root"
    sudo=sudo
  fi
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install \
    -y -qq --no-install-recommends "$2" >/dev/null; }; then
    die "$2 could not be installed"
  fi
}
ensure_tool wrk wrk
ensure_tool nginx nginx-light
ensure_tool curl curl
export PATH="$PATH:/usr/sbin"

say "building the collector and the soak helpers (release)"
cargo build --release --locked --quiet --bin ingress-tap \
  --example policysync_recorder --example soak_collector_check

WORK=$(mktemp -d "${TMPDIR:-/tmp}/soak-collector.XXXXXX")
mkdir -p "$WORK/logs"
LOG="$WORK/logs/ingress.log"
SOCKET="$WORK/felix.sock"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  say "files of this run: $WORK"
}
trap cleanup EXIT

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
}
NGINX_PORT=$(free_port)
METRICS_PORT=$(free_port)

# wait_for DESCRIPTION COMMAND...: polls COMMAND until it succeeds or DEADLINE passes.
wait_for() {
  local what=$1 start
  shift
  start=$(date +%s)
  until "$@"; do
    (($(date +%s) - start < DEADLINE)) || die "timed out waiting for $what"
    sleep 0.1
  done
}

metric() { # name -> value summed over label sets, empty when the collector does not answer
  curl -fsS --max-time 2 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
    awk -v name="$1" '$1 == name || index($1, name "{") == 1 { sum += $2; found = 1 }
                      END { if (found) printf "%d\n", sum }'
}

# --- nginx: the spec's template, one access log that is rotated and one that is not --------
# shellcheck disable=SC2016 # nginx variables, expanded by nginx
TEMPLATE='tigera_secure_ee_ingress: {"source_port": $realip_remote_port, "destination_ip": "$server_addr", "destination_port": $server_port, "source_ip": "$realip_remote_addr", "x-forwarded-for": "$http_x_forwarded_for", "x-real-ip": "$http_x_real_ip"}'
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process on;
$USER_LINE
worker_processes $NGINX_WORKERS;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    log_format ingress '$TEMPLATE';
    access_log $LOG ingress;
    access_log $WORK/truth.log ingress buffer=256k flush=1s;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
mkdir -p "$WORK/tmp"
: >"$LOG"
nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/error.log" >"$WORK/nginx.out" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_for "nginx to listen" bash -c "exec 3<>/dev/tcp/127.0.0.1/$NGINX_PORT" 2>/dev/null

# --- the recording Felix and the collector --------------------------------------------------
start_felix() {
  target/release/examples/policysync_recorder --socket "$SOCKET" --out "$WORK/reports.jsonl" \
    >>"$WORK/felix.out" 2>&1 &
  FELIX_PID=$!
  PIDS+=("$FELIX_PID")
  wait_for "the recording Felix" felix_listening
}
felix_listening() { [ -S "$SOCKET" ] && kill -0 "$FELIX_PID" 2>/dev/null; }

start_collector() {
  INGRESS_LOG_PATH="$LOG" INGRESS_LOG_INTERVAL_SECONDS="$INTERVAL" \
    INGRESS_LOG_REQUESTS_PER_INTERVAL=-1 FELIX_DIAL_TARGET="$SOCKET" LOG_LEVEL=Info \
    INGRESS_TAP_METRICS_LISTEN="127.0.0.1:$METRICS_PORT" \
    target/release/ingress-tap collect >>"$WORK/collector.out" 2>&1 &
  COLLECTOR_PID=$!
  PIDS+=("$COLLECTOR_PID")
  echo "$COLLECTOR_PID" >"$WORK/collector.pid"
  wait_for "the collector's metrics" test -n "$(metric ingress_tap_collector_lines_read_total)"
}

stop_process() { # pid name: SIGTERM, then the exit status must be 0
  kill -TERM "$1"
  local status=0
  wait "$1" || status=$?
  [ "$status" = 0 ] || die "$2 exited with status $status on SIGTERM (see $WORK)"
}

start_felix
start_collector

# --- memory sampler: the collector's VmRSS once a second, whichever process is current -------
T0=$(date +%s.%N)
calc() { awk "BEGIN { printf \"%.3f\", ($1) }"; } # parenthesised: a bare > is a redirection in awk
elapsed() { calc "$(date +%s.%N) - $T0"; }
(
  while [ ! -e "$WORK/stop-sampling" ]; do
    pid=$(cat "$WORK/collector.pid" 2>/dev/null || true)
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$(elapsed) $pid $rss" >>"$WORK/rss.txt"
    sleep 1
  done
) &
PIDS+=("$!")

# --- load: a new X-Forwarded-For on every request ---------------------------------------------
{ echo "DELAY_MS = $DELAY_MS"; cat <<'EOF'
-- Each thread numbers its requests and turns (thread, number) into a distinct address, so
-- every request of the run carries an original IP no other request carries.
local next_thread = 0
function setup(thread)
  thread:set("thread_number", next_thread)
  next_thread = next_thread + 1
end
local sent = 0
function request()
  sent = sent + 1
  local ip = string.format("%d.%d.%d.%d", 11 + thread_number,
    math.floor(sent / 65536) % 256, math.floor(sent / 256) % 256, sent % 256)
  return wrk.format("GET", "/", { ["X-Forwarded-For"] = ip })
end
-- wrk has no rate option; a fixed pause per connection paces it.
function delay()
  return DELAY_MS
end
EOF
} >"$WORK/unique-xff.lua"
say "load: wrk -t$WRK_THREADS -c$CONNECTIONS for ${DURATION}s on 127.0.0.1:$NGINX_PORT"
wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/unique-xff.lua" \
  "http://127.0.0.1:$NGINX_PORT/" >"$WORK/wrk.out" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")

sleep_until() { # seconds since the load started
  local left
  left=$(calc "$1 - $(elapsed)")
  if [ "$(calc "$left > 0")" = 1.000 ]; then sleep "$left"; fi
}
at() { calc "$DURATION * $1"; }

sleep_until "$(at 0.2)"
say "$(elapsed | cut -c1-5)s: rename rotation (mv, then nginx reopens on USR1)"
mv "$LOG" "$LOG.1"
kill -USR1 "$NGINX_PID"

sleep_until "$(at 0.4)"
say "$(elapsed | cut -c1-5)s: collector restart (SIGTERM, start again from its checkpoint)"
stop_process "$COLLECTOR_PID" "the collector"
start_collector
RESTARTED_AT=$(elapsed)

sleep_until "$(at 0.6)"
say "$(elapsed | cut -c1-5)s: copytruncate rotation (cp, then truncate -s 0)"
mv "$LOG.1" "$LOG.2"
cp "$LOG" "$LOG.1"
truncate -s 0 "$LOG"

sleep_until "$(at 0.8)"
say "$(elapsed | cut -c1-5)s: Felix restart (SIGTERM, start again on the same socket)"
stop_process "$FELIX_PID" "the recording Felix"
start_felix

wait "$WRK_PID" || die "wrk failed: $(cat "$WORK/wrk.out")"
say "load over; draining"
kill -QUIT "$NGINX_PID" # graceful: workers finish, the buffered truth log is flushed
wait "$NGINX_PID" || true
drained() {
  [ "$(metric ingress_tap_collector_lag_bytes)" = 0 ] &&
    [ "$(metric ingress_tap_collector_queue_depth)" = 0 ]
}
wait_for "the collector to read everything" drained
stop_process "$COLLECTOR_PID" "the collector"
touch "$WORK/stop-sampling"
stop_process "$FELIX_PID" "the recording Felix"

RATE=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.out")
ERRORS=$(grep -E 'Socket errors|Non-2xx' "$WORK/wrk.out" || true)
[ -z "$ERRORS" ] || say "wrk: $ERRORS"
target/release/examples/soak_collector_check --logs "$WORK/logs" --truth "$WORK/truth.log" \
  --reports "$WORK/reports.jsonl" --rss "$WORK/rss.txt" \
  --steady-from "$(calc "$RESTARTED_AT + 10")" --rate "${RATE:-0}" --seconds "$DURATION"
