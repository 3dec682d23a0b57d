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

# Test tools from PyPI used by the gateway's end-to-end tests: schemathesis (against the served
# OpenAPI document) and rotel (an OTLP receiver for the end-to-end trace test).
TEST_TOOLS=("schemathesis==4.32.5" "rotel==0.0.1a15")
TOOLS_STAMP="$ROOT/.erp/venv-tests/.tools"
if [ "$(cat "$TOOLS_STAMP" 2>/dev/null)" != "${TEST_TOOLS[*]}" ]; then
  say "installing ${TEST_TOOLS[*]} into .erp/venv-tests"
  python3 -m venv "$ROOT/.erp/venv-tests"
  "$ROOT/.erp/venv-tests/bin/pip" install -q --disable-pip-version-check "${TEST_TOOLS[@]}"
  echo "${TEST_TOOLS[*]}" >"$TOOLS_STAMP"
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
