#!/usr/bin/env bash
# Benchmark of the full authenticated path against a bare axum handler, in the same run, on this
# machine (see docs/benchmarks.md):
#   1. GET /api/v1/events/{id} with a valid token, 64 connections (gateway → cached introspection →
#      gRPC → event's in-process cache), and the bare handler at the same load; prints the ratio;
#   2. POST /api/v1/events/{id}/claims by many distinct players (AUTO, limited stock);
#   3. resident memory of each service afterwards.
# Builds release binaries, starts the stores and the three services on 127.0.0.1:18xxx, installs
# wrk (Debian) if missing. DURATION (seconds, default 15), CONNECTIONS (64), PLAYERS (2000),
# GATEWAY_THREADS (the gateway's ERP_WORKER_THREADS: HTTP shards, default: the cores), SERVICE_THREADS
# (auth's and event's, default 1: what the chart's one-CPU limits give them in a cluster), ROUNDS
# (3: the bare handler and the authenticated read alternate this many times; medians compared).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

DURATION="${DURATION:-15}"
CONNECTIONS="${CONNECTIONS:-64}"
PLAYERS="${PLAYERS:-2000}"
GATEWAY_THREADS="${GATEWAY_THREADS:-$(nproc)}"
SERVICE_THREADS="${SERVICE_THREADS:-1}"
ROUNDS="${ROUNDS:-3}"
LOGS="$ROOT/.erp/logs/bench"
mkdir -p "$LOGS"

require_rust
"$ROOT/scripts/stores.sh" start
export_store_urls
ensure_debian_tool wrk wrk

say "building release binaries"
cargo build --release --locked --bins
cargo build --release --locked -p erp-gateway --example bare_axum

RUN="bench$(date +%s)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

mkdir -p "$ROOT/.erp"
identity_key="$ROOT/.erp/bench-identity.key"
[ -s "$identity_key" ] || (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$identity_key")
common=(ERP_LOG_FORMAT=json RUST_LOG=warn ERP_REDIS_KEY_PREFIX="$RUN:" ERP_WORKER_THREADS="$SERVICE_THREADS"
  ERP_SERVICE_IDENTITY_KEY_FILE="$identity_key")
env "${common[@]}" ERP_EVENT_ADDR=127.0.0.1:18052 ERP_ADMIN_ADDR=127.0.0.1:18066 \
  ERP_MONGODB_DATABASE="${RUN}_event" target/release/erp-event >"$LOGS/event.log" 2>&1 &
pids+=("$!"); event_pid=$!
env "${common[@]}" ERP_AUTH_ADDR=127.0.0.1:18051 ERP_ADMIN_ADDR=127.0.0.1:18065 \
  ERP_MONGODB_DATABASE="${RUN}_auth" ERP_EVENT_URL=http://127.0.0.1:18052 \
  ERP_BOOTSTRAP_ADMIN_EMAIL=bench-admin@example.com ERP_BOOTSTRAP_ADMIN_PASSWORD=bench-admin-password \
  ERP_ARGON2_MEMORY_KIB=1024 ERP_ARGON2_ITERATIONS=1 \
  target/release/erp-auth >"$LOGS/auth.log" 2>&1 &
pids+=("$!"); auth_pid=$!
env "${common[@]}" ERP_GATEWAY_ADDR=127.0.0.1:18080 ERP_ADMIN_ADDR=127.0.0.1:18064 \
  ERP_AUTH_URL=http://127.0.0.1:18051 ERP_EVENT_URL=http://127.0.0.1:18052 \
  ERP_RATE_LIMIT_PER_MINUTE=0 ERP_AUTH_RATE_LIMIT_PER_MINUTE=0 ERP_WORKER_THREADS="$GATEWAY_THREADS" \
  target/release/erp-gateway >"$LOGS/gateway.log" 2>&1 &
pids+=("$!"); gateway_pid=$!
target/release/examples/bare_axum 127.0.0.1:18090 >"$LOGS/bare.log" 2>&1 &
pids+=("$!")

for port in 18065 18066 18064; do
  for _ in $(seq 1 150); do
    python3 -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/readyz',timeout=2).status==200 else 1)" 2>/dev/null && break
    sleep 0.2
  done
done

say "preparing: an event, $PLAYERS players"
python3 - "$PLAYERS" "$LOGS" <<'PY'
import json, sys, urllib.request, datetime
players, logs = int(sys.argv[1]), sys.argv[2]
base = "http://127.0.0.1:18080/api/v1"
def call(method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json", **({"authorization": "Bearer " + token} if token else {})})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")
admin = call("POST", "/auth/login", {"email": "bench-admin@example.com", "password": "bench-admin-password"})["accessToken"]
now = datetime.datetime.now(datetime.timezone.utc)
iso = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
event = call("POST", "/events", {"title": "Benchmark", "startsAt": iso(now - datetime.timedelta(hours=1)),
    "endsAt": iso(now + datetime.timedelta(days=1)),
    "rewards": [{"name": "Gold", "type": "CURRENCY", "quantity": 10, "stock": 1000000}]}, admin)
tokens = []
for i in range(players):
    email = f"bench-player-{i}@example.com"
    call("POST", "/auth/register", {"email": email, "password": "bench-player-password"})
    tokens.append(call("POST", "/auth/login", {"email": email, "password": "bench-player-password"})["accessToken"])
open(f"{logs}/event_id", "w").write(event["id"])
open(f"{logs}/admin_token", "w").write(admin)
with open(f"{logs}/tokens.txt", "w") as f:
    f.write("\n".join(tokens))
PY
EVENT_ID="$(cat "$LOGS/event_id")"
TOKEN="$(cat "$LOGS/admin_token")"

measure() { # name, round, url, extra args...
  local name=$1 round=$2 url=$3; shift 3
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$LOGS/$name.$round.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$LOGS/$name.$round.txt")
  p50=$(awk '$1=="50%" {print $2}' "$LOGS/$name.$round.txt")
  p99=$(awk '$1=="99%" {print $2}' "$LOGS/$name.$round.txt")
  printf '| %s | %s | %s | %s | %s |\n' "$round" "$name" "$rps" "$p50" "$p99"
  echo "$rps" >"$LOGS/$name.$round.rps"
}

say "warming up"
wrk -t2 -c"$CONNECTIONS" -d3s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:18080/api/v1/events/$EVENT_ID" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d3s "http://127.0.0.1:18090/" >/dev/null

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); wrk -t2 -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds; ERP_WORKER_THREADS: gateway $GATEWAY_THREADS, auth and event $SERVICE_THREADS"
echo
echo "| round | target | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|"
# The two alternate so that both see the same state of the machine; the bare handler's figure
# varies by a fifth from run to run here, so the ratio is taken between medians.
for round in $(seq 1 "$ROUNDS"); do
  measure bare-axum "$round" "http://127.0.0.1:18090/"
  measure authenticated-get-event "$round" "http://127.0.0.1:18080/api/v1/events/$EVENT_ID" -H "Authorization: Bearer $TOKEN"
done
echo
python3 - "$LOGS" "$ROUNDS" <<'PY'
import statistics, sys
logs, rounds = sys.argv[1], int(sys.argv[2])
median = lambda name: statistics.median(float(open(f"{logs}/{name}.{r}.rps").read()) for r in range(1, rounds + 1))
bare, gw = median("bare-axum"), median("authenticated-get-event")
print(f"Medians: bare {bare:.0f}/s, authenticated GET {gw:.0f}/s: "
      f"authenticated GET /events/{{id}} reaches {gw / bare * 100:.1f}% of the bare handler's throughput.")
PY
say "claims: every player claims once, $CONNECTIONS at a time"
python3 - "$LOGS" "$EVENT_ID" "$CONNECTIONS" <<'PY'
import sys, time, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
logs, event_id, connections = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokens = open(f"{logs}/tokens.txt").read().split()
def claim(token):
    req = urllib.request.Request(f"http://127.0.0.1:18080/api/v1/events/{event_id}/claims", method="POST",
                                 headers={"authorization": "Bearer " + token})
    started = time.perf_counter()
    try:
        status = urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        status = e.code
    return status, time.perf_counter() - started
started = time.perf_counter()
with ThreadPoolExecutor(connections) as pool:
    results = list(pool.map(claim, tokens))
elapsed = time.perf_counter() - started
latencies = sorted(l for _, l in results)
granted = sum(1 for s, _ in results if s == 201)
print(f"| claims ({len(tokens)} players) | {granted / elapsed:.0f} granted/s | {latencies[len(latencies)//2]*1000:.1f}ms | {latencies[int(len(latencies)*0.99)]*1000:.1f}ms |")
print(f"{granted} of {len(tokens)} claims granted in {elapsed:.1f} s; other answers: {sorted(set(s for s, _ in results if s != 201))}")
PY
echo
for name in gateway auth event; do
  pid_var="${name}_pid"
  printf '%s resident memory after the runs: %s MB\n' "$name" "$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/${!pid_var}/status")"
done
