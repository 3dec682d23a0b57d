# Shared by the scripts: paths, messages and the Rust toolchain check.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$(basename "$0" .sh)" "$*" >&2; exit 1; }

require_rust() {
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install a Rust toolchain (1.88 or newer, e.g. with rustup) and retry"
  if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
      rustup component list --installed 2>/dev/null | grep -q "^$component" ||
        { say "adding rustup component $component"; rustup component add "$component"; }
    done
  fi
}

# The local stores unless the environment points elsewhere.
export_store_urls() {
  export ERP_MONGODB_URI="${ERP_MONGODB_URI:-mongodb://127.0.0.1:${ERP_STORE_MONGO_PORT:-27017}}"
  export ERP_REDIS_URL="${ERP_REDIS_URL:-redis://127.0.0.1:${ERP_STORE_REDIS_PORT:-6379}}"
}

# Installs a Debian package (as root, or with sudo) when `command` is missing.
ensure_debian_tool() {
  local command="$1" package="$2"
  command -v "$command" >/dev/null 2>&1 && return 0
  say "installing $package (Debian)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "$package" >/dev/null;
  else sudo apt-get update -qq && sudo apt-get install -y -qq "$package" >/dev/null; fi
}
