#!/usr/bin/env bash
# Starts the whole platform locally: the stores (installed if missing), then auth, event and the
# gateway on 127.0.0.1, with a bootstrap admin. Ctrl-C stops everything it started.
#
#   ERP_BOOTSTRAP_ADMIN_EMAIL / ERP_BOOTSTRAP_ADMIN_PASSWORD   the admin login (defaults printed)
#   ERP_MONGODB_URI / ERP_REDIS_URL                           use these stores instead of local ones
#   ERP_PROFILE=release                                       build optimised binaries (slower build)
#   ERP_DEV_GRPC_TLS=1                                        mutual TLS between the services, with
#                                                             certificates made by scripts/dev-certs.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

require_rust
stores_before="$("$ROOT/scripts/stores.sh" status)"
"$ROOT/scripts/stores.sh" start
export_store_urls

profile="${ERP_PROFILE:-dev}"
target_dir=debug
[ "$profile" = release ] && target_dir=release
say "building the services (profile $profile)"
cargo build --workspace --bins --locked --profile "$profile"

export ERP_BOOTSTRAP_ADMIN_EMAIL="${ERP_BOOTSTRAP_ADMIN_EMAIL:-admin@example.com}"
export ERP_BOOTSTRAP_ADMIN_PASSWORD="${ERP_BOOTSTRAP_ADMIN_PASSWORD:-change-me-admin-42}"
export ERP_LOG_FORMAT="${ERP_LOG_FORMAT:-pretty}"
export RUST_LOG="${RUST_LOG:-info}"
LOGS="$ROOT/.erp/logs"
mkdir -p "$LOGS"

# The key the services sign and verify their caller assertions with: made once, kept in .erp/.
identity_key="$ROOT/.erp/service-identity.key"
if [ ! -s "$identity_key" ]; then
  (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$identity_key")
fi
export ERP_SERVICE_IDENTITY_KEY_FILE="${ERP_SERVICE_IDENTITY_KEY_FILE:-$identity_key}"
if [ "${ERP_DEV_GRPC_TLS:-0}" = 1 ]; then
  "$ROOT/scripts/dev-certs.sh" "$ROOT/.erp/grpc-tls"
  export ERP_GRPC_TLS_CERT_FILE="$ROOT/.erp/grpc-tls/tls.crt"
  export ERP_GRPC_TLS_KEY_FILE="$ROOT/.erp/grpc-tls/tls.key"
  export ERP_GRPC_TLS_CA_FILE="$ROOT/.erp/grpc-tls/ca.crt"
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  say "stopping services"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Stop the local stores only if this script started them.
  if ! grep -q "redis: up" <<<"$stores_before" || ! grep -q "mongodb: up" <<<"$stores_before"; then
    "$ROOT/scripts/stores.sh" stop
  fi
  say "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name, admin port, extra env...
  local name=$1 admin=$2; shift 2
  env ERP_ADMIN_ADDR="127.0.0.1:$admin" "$@" "target/$target_dir/$name" >"$LOGS/$name.log" 2>&1 &
  pids+=("$!")
  say "$name started (pid $!, admin 127.0.0.1:$admin, log $LOGS/$name.log)"
}

wait_ready() { # name, admin port
  for _ in $(seq 1 150); do
    python3 - "$2" <<'PY' 2>/dev/null && return 0
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
    sleep 0.2
  done
  die "$1 did not become ready; see $LOGS/$1.log"
}

start erp-auth 9465 ERP_AUTH_ADDR=127.0.0.1:50051
start erp-event 9466 ERP_EVENT_ADDR=127.0.0.1:50052
wait_ready erp-auth 9465
wait_ready erp-event 9466
start erp-gateway 9464 ERP_GATEWAY_ADDR=127.0.0.1:8080 \
  ERP_AUTH_URL=http://127.0.0.1:50051 ERP_EVENT_URL=http://127.0.0.1:50052
wait_ready erp-gateway 9464

cat <<MSG

  Event Reward Platform is running.

  Gateway      http://127.0.0.1:8080/api/v1
  Swagger UI   http://127.0.0.1:8080/docs
  OpenAPI      http://127.0.0.1:8080/api/v1/openapi.json
  Admin login  $ERP_BOOTSTRAP_ADMIN_EMAIL / $ERP_BOOTSTRAP_ADMIN_PASSWORD
  Metrics      http://127.0.0.1:9464/metrics (gateway), :9465 (auth), :9466 (event)
  Logs         $LOGS/

  Press Ctrl-C to stop.

MSG
# Any service exiting stops the rest.
wait -n "${pids[@]}" || true
say "a service exited; see $LOGS/"
