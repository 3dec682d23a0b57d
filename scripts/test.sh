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
# OpenAPI document) and jmespath (evaluates the Alloy log pipeline in the log-pipeline test).
TEST_TOOLS=("schemathesis==4.32.5" "jmespath==1.0.1")
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

# Supply chain (deny.toml): licenses, bans (wildcards, duplicates) and sources of Cargo.lock,
# strictly. cargo-deny comes from crates.io, pinned, into the cargo bin dir (once; a cold
# install compiles for ~2.5 minutes on 2 cores). Advisories need the RustSec database, a git
# repository on GitHub that this project's machines cannot reach and no package registry ships:
# they are checked only against a local checkout named by ERP_ADVISORY_DB.
CARGO_DENY_VERSION=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  say "installing cargo-deny $CARGO_DENY_VERSION from crates.io (cargo install --locked)"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
fi
say "cargo deny check licenses bans sources"
cargo deny --locked check licenses bans sources
if [ -n "${ERP_ADVISORY_DB:-}" ]; then
  [ -d "$ERP_ADVISORY_DB/crates" ] && git -C "$ERP_ADVISORY_DB" rev-parse --git-dir >/dev/null 2>&1 ||
    die "ERP_ADVISORY_DB=$ERP_ADVISORY_DB is not a git checkout of the RustSec advisory-db (no crates/)"
  # cargo-deny opens the database of db-urls (deny.toml) at <db-path>/advisory-db-<hash of the URL>
  # (the name cargo-deny 0.20 derives from https://github.com/rustsec/advisory-db); --offline: no
  # fetch, and a database last updated over 90 days ago fails as stale.
  ADVISORY_DB_ROOT="$(mktemp -d)"
  ln -s "$(cd "$ERP_ADVISORY_DB" && pwd)" "$ADVISORY_DB_ROOT/advisory-db-3157b0e258782691"
  say "cargo deny check advisories (database: $ERP_ADVISORY_DB, $(git -C "$ERP_ADVISORY_DB" log -1 --format=%cs))"
  advisories_rc=0
  ERP_ADVISORY_DB_ROOT="$ADVISORY_DB_ROOT" cargo deny --offline --locked check advisories || advisories_rc=$?
  rm -rf "$ADVISORY_DB_ROOT"
  [ "$advisories_rc" -eq 0 ] || die "cargo deny check advisories failed"
else
  say "advisories NOT checked (not passed): no RustSec advisory database here (it lives on GitHub, unreachable from this machine; no package registry ships it); set ERP_ADVISORY_DB to a checkout of the RustSec advisory-db repository to check them"
fi

say "tests (MongoDB: $ERP_MONGODB_URI, Redis: $ERP_REDIS_URL)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  say "cargo-nextest not found; using cargo test"
  cargo test --workspace --locked --no-fail-fast
fi
