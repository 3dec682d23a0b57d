#!/usr/bin/env bash
# What the gateway's access log (ERP_ACCESS_LOG) costs the authenticated event read: the three
# release services at the chart's log settings (RUST_LOG=info, JSON), rate limits off so only the
# log differs, one token; the gateway is restarted per mode (off, all, errors) and wrk reads
# GET /api/v1/events/{id} with 64 connections for 8 s after a 3 s warm-up, three rounds. Prints a
# Markdown table (requests/s and the gateway's log lines per mode). See docs/benchmarks.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
require_rust
"$ROOT/scripts/stores.sh" start
export_store_urls
ensure_debian_tool wrk wrk
say "building release binaries"
cargo build --release --locked --bins
LOGS="$ROOT/.erp/logs/bench-access-log"
mkdir -p "$LOGS"
RUN="acc$(date +%s)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
identity_key="$ROOT/.erp/bench-identity.key"
[ -s "$identity_key" ] || (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$identity_key")
common=(ERP_LOG_FORMAT=json RUST_LOG=info ERP_REDIS_KEY_PREFIX="$RUN:" ERP_WORKER_THREADS=1 ERP_SERVICE_IDENTITY_KEY_FILE="$identity_key")
env "${common[@]}" ERP_EVENT_ADDR=127.0.0.1:18152 ERP_ADMIN_ADDR=127.0.0.1:18166 \
  ERP_MONGODB_DATABASE="${RUN}_event" target/release/erp-event >"$LOGS/event.log" 2>&1 &
pids+=("$!")
env "${common[@]}" ERP_AUTH_ADDR=127.0.0.1:18151 ERP_ADMIN_ADDR=127.0.0.1:18165 \
  ERP_MONGODB_DATABASE="${RUN}_auth" ERP_EVENT_URL=http://127.0.0.1:18152 \
  ERP_BOOTSTRAP_ADMIN_EMAIL=bench-admin@example.com ERP_BOOTSTRAP_ADMIN_PASSWORD=bench-admin-password \
  ERP_ARGON2_MEMORY_KIB=1024 ERP_ARGON2_ITERATIONS=1 target/release/erp-auth >"$LOGS/auth.log" 2>&1 &
pids+=("$!")
wait_ready() { for _ in $(seq 1 600); do python3 -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$1/readyz',timeout=2).status==200 else 1)" 2>/dev/null && return 0; sleep 0.2; done; return 1; }
start_gateway() {
  env "${common[@]}" ERP_WORKER_THREADS=2 ERP_ACCESS_LOG="$1" ERP_GATEWAY_ADDR=127.0.0.1:18180 ERP_ADMIN_ADDR=127.0.0.1:18164 \
    ERP_AUTH_URL=http://127.0.0.1:18151 ERP_EVENT_URL=http://127.0.0.1:18152 \
    ERP_RATE_LIMIT_PER_MINUTE=0 ERP_AUTH_RATE_LIMIT_PER_MINUTE=0 \
    target/release/erp-gateway >"$LOGS/gateway-$1.log" 2>&1 &
  gw=$!
  wait_ready 18164
}
wait_ready 18165; wait_ready 18166
start_gateway all
python3 - "$LOGS" <<'PY'
import json, sys, urllib.request, datetime
base = "http://127.0.0.1:18180/api/v1"
def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json", **({"authorization": "Bearer " + token} if token else {})})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")
admin = call("POST", "/auth/login", {"email": "bench-admin@example.com", "password": "bench-admin-password"})["accessToken"]
now = datetime.datetime.now(datetime.timezone.utc)
iso = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
event = call("POST", "/events", {"title": "Benchmark", "startsAt": iso(now - datetime.timedelta(hours=1)),
    "endsAt": iso(now + datetime.timedelta(days=1)),
    "rewards": [{"name": "Gold", "type": "CURRENCY", "quantity": 10, "stock": 1000000}]}, admin)
open(sys.argv[1] + "/event_id", "w").write(event["id"]); open(sys.argv[1] + "/admin_token", "w").write(admin)
PY
kill -TERM $gw; wait $gw || true
EVENT_ID=$(cat $LOGS/event_id); TOKEN=$(cat $LOGS/admin_token)
URL="http://127.0.0.1:18180/api/v1/events/$EVENT_ID"
echo "| round | ERP_ACCESS_LOG | requests/s | gateway log |"
echo "|---|---|---|---|"
for round in 1 2 3; do
  for mode in off all errors; do
    start_gateway $mode
    wrk -t2 -c64 -d3s -H "Authorization: Bearer $TOKEN" "$URL" >/dev/null
    rps=$(wrk -t2 -c64 -d8s -H "Authorization: Bearer $TOKEN" "$URL" | awk '/Requests\/sec/ {print $2}')
    echo "| $round | $mode | $rps | $(wc -l <"$LOGS/gateway-$mode.log") lines |"
    kill -TERM $gw; wait $gw || true
  done
done
