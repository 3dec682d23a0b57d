#!/usr/bin/env bash
# Runs every check and test of the project: the deployment checks (chart, manifests, alert rules,
# dashboards, Tiltfile), formatting, clippy, and all tests against the real stores (which it
# installs and starts if needed). Idempotent; .ci/run calls exactly this.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

require_rust
"$ROOT/scripts/stores.sh" start
export_store_urls

say "deployment checks (scripts/check-deploy.sh)"
"$ROOT/scripts/check-deploy.sh"

# schemathesis (PyPI) runs inside the gateway's tests against the served OpenAPI document.
SCHEMATHESIS_VERSION=4.32.5
if ! "$ROOT/.erp/venv-tests/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  say "installing schemathesis $SCHEMATHESIS_VERSION into .erp/venv-tests"
  python3 -m venv "$ROOT/.erp/venv-tests"
  "$ROOT/.erp/venv-tests/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "tests (MongoDB: $ERP_MONGODB_URI, Redis: $ERP_REDIS_URL)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  say "cargo-nextest not found; using cargo test"
  cargo test --workspace --locked --no-fail-fast
fi
