#!/usr/bin/env bash
# Installs (if missing) and starts (if not running) the real stores the platform needs on loopback:
# Redis (Debian redis-server) and SecantusDB, a MongoDB wire-compatible server (PyPI, in a virtualenv
# under .erp/; it bundles its own WiredTiger). Idempotent: running it twice changes nothing the second time.
#
# Skips a store when ERP_MONGODB_URI / ERP_REDIS_URL point somewhere else than the local default.
# Environment: ERP_STORE_MONGO_PORT (27017), ERP_STORE_REDIS_PORT (6379).
#   scripts/stores.sh          install + start
#   scripts/stores.sh stop     stop what this script started
#   scripts/stores.sh status   say what is running
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STATE="$ROOT/.erp"
VENV="$STATE/venv"
DATA="$STATE/data"
LOGS="$STATE/logs"
MONGO_PORT="${ERP_STORE_MONGO_PORT:-27017}"
REDIS_PORT="${ERP_STORE_REDIS_PORT:-6379}"
SECANTUS_VERSION="${ERP_SECANTUS_VERSION:-0.7.0b3}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2 tries=${3:-150}
  for _ in $(seq 1 "$tries"); do
    port_open "$port" && return 0
    sleep 0.2
  done
  say "ERROR: $name did not open 127.0.0.1:$port; see $LOGS/$name.log"
  tail -n 30 "$LOGS/$name.log" 2>/dev/null || true
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$APT_UPDATED" = 0 ]; then
    say "apt-get update"
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  say "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

uses_local() { # $1 = configured URL, $2 = default prefix
  [ -z "$1" ] || [[ "$1" == "$2"* ]]
}

want_redis() { uses_local "${ERP_REDIS_URL:-}" "redis://127.0.0.1:$REDIS_PORT"; }
want_mongo() { uses_local "${ERP_MONGODB_URI:-}" "mongodb://127.0.0.1:$MONGO_PORT"; }

start_redis() {
  if ! want_redis; then say "redis: ERP_REDIS_URL=$ERP_REDIS_URL points elsewhere; not starting one"; return; fi
  if port_open "$REDIS_PORT"; then say "redis: already running on 127.0.0.1:$REDIS_PORT"; return; fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  # Debian's package may start its own service on 6379; that is fine if it is on our port.
  if port_open "$REDIS_PORT"; then say "redis: running on 127.0.0.1:$REDIS_PORT (system service)"; return; fi
  mkdir -p "$DATA/redis" "$LOGS"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DATA/redis" \
    --daemonize yes --pidfile "$STATE/redis.pid" --logfile "$LOGS/redis.log" \
    --save "" --appendonly no --protected-mode yes >/dev/null
  wait_port "$REDIS_PORT" redis
  say "redis: started on 127.0.0.1:$REDIS_PORT (data $DATA/redis)"
}

secantus_works() { [ -x "$VENV/bin/secantusd-py" ] && "$VENV/bin/python" -c 'import secantus.storage' >/dev/null 2>&1; }

install_secantus() {
  secantus_works && return 0
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    python3 -m venv "$VENV"
  fi
  say "installing SecantusDB $SECANTUS_VERSION into $VENV (first time: about a minute)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --pre "SecantusDB==$SECANTUS_VERSION"
  if ! secantus_works; then
    # SecantusDB ships its own WiredTiger bindings; PyPI's `wiredtiger` package, if present,
    # overwrites them with incompatible ones. Remove it and restore SecantusDB's files.
    say "repairing SecantusDB's bundled WiredTiger module"
    "$VENV/bin/pip" uninstall -q -y wiredtiger >/dev/null 2>&1 || true
    "$VENV/bin/pip" install -q --disable-pip-version-check --pre --force-reinstall --no-deps "SecantusDB==$SECANTUS_VERSION"
  fi
  secantus_works || { say "ERROR: SecantusDB does not import; see: $VENV/bin/python -c 'import secantus.storage'"; return 1; }
}

start_mongo() {
  if ! want_mongo; then say "mongodb: ERP_MONGODB_URI points elsewhere; not starting SecantusDB"; return; fi
  if port_open "$MONGO_PORT"; then say "mongodb: already running on 127.0.0.1:$MONGO_PORT"; return; fi
  install_secantus
  mkdir -p "$DATA/mongo" "$LOGS"
  nohup "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$DATA/mongo" \
    >"$LOGS/secantusdb.log" 2>&1 &
  echo $! >"$STATE/secantusdb.pid"
  wait_port "$MONGO_PORT" secantusdb 300
  say "mongodb: SecantusDB started on 127.0.0.1:$MONGO_PORT (data $DATA/mongo)"
}

stop_pid_file() { # pid file, name, port
  [ -f "$1" ] || return 0
  local pid
  pid="$(cat "$1")"
  if kill "$pid" 2>/dev/null; then
    # Wait until it has really gone, so a start right after does not find the port still open.
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    say "$2: stopped"
  fi
  rm -f "$1"
}

stop_all() {
  stop_pid_file "$STATE/secantusdb.pid" mongodb "$MONGO_PORT"
  stop_pid_file "$STATE/redis.pid" redis "$REDIS_PORT"
}

status() {
  port_open "$REDIS_PORT" && say "redis: up on 127.0.0.1:$REDIS_PORT" || say "redis: down"
  port_open "$MONGO_PORT" && say "mongodb: up on 127.0.0.1:$MONGO_PORT" || say "mongodb: down"
}

case "${1:-start}" in
  start) mkdir -p "$STATE"; start_redis; start_mongo ;;
  stop) stop_all ;;
  status) status ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
