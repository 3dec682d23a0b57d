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
