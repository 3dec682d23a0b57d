"""PromQL helpers of the deployment checks.

usage:
  promql.py dashboard-rules OUT.yml       step 7: every PromQL expression of the dashboards as a
                                          recording rule in OUT.yml (for `promtool check rules`)
  promql.py metric-names                  step 9: metric names used by the dashboards and the
                                          alert rules are a subset of infrastructure/metrics.txt
  promql.py rule-tests                    step 6: every alert has a test where it fires and one
                                          where it does not
  promql.py config-without-k8s-sd IN OUT  step 6: a copy of prometheus-kubernetes.yml without
                                          kubernetes_sd_configs (for a promtool built without
                                          Kubernetes discovery, as Debian's), after checking them
  promql.py live URL SECONDS              step 6: the Prometheus at URL (started with the local
                                          config, as docs/deployment.md says) becomes ready within
                                          SECONDS, loaded every alert rule without error and has
                                          the erp-local targets of the three services
"""

import glob
import json
import os
import re
import sys

import yaml

from common import ROOT, rel

DASHBOARDS = os.path.join(ROOT, "infrastructure", "grafana", "dashboards")
RULES = os.path.join(ROOT, "infrastructure", "prometheus", "rules")
RULE_TESTS = os.path.join(ROOT, "infrastructure", "prometheus", "tests")
METRICS = os.path.join(ROOT, "infrastructure", "metrics.txt")

# Grafana's interval variables become durations; every other variable is a label-matcher value.
INTERVAL_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
                 "__interval_ms": "60000", "__range_ms": "3600000"}
VAR = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Synthetic series Prometheus makes itself.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan", "Inf", "NaN", "atan2", "start", "end"}


def substitute(expr, where):
    """Grafana variables -> PromQL; label values only (a variable elsewhere is an error)."""
    out, pos = [], 0
    spans = [m.span() for m in STRING.finditer(expr)]
    for m in VAR.finditer(expr):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in INTERVAL_VARS:
            repl = INTERVAL_VARS[name]
        else:
            if not any(a <= m.start() < b for a, b in spans):
                raise SystemExit("%s: variable $%s outside a label matcher: %s" % (where, name, expr))
            repl = ".*"
        out.append(expr[pos:m.start()])
        out.append(repl)
        pos = m.end()
    out.append(expr[pos:])
    return "".join(out)


def dashboard_exprs():
    """(where, PromQL) for every Prometheus query of every dashboard, variables substituted."""
    found = []
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
        base = os.path.basename(path)

        def is_loki(ds):
            return isinstance(ds, dict) and ds.get("type") == "loki"

        def walk(panels):
            for p in panels:
                yield p
                yield from walk(p.get("panels") or [])

        for panel in walk(dash.get("panels") or []):
            for t in panel.get("targets") or []:
                if is_loki(t.get("datasource")) or is_loki(panel.get("datasource")):
                    continue
                expr = t.get("expr")
                if expr:
                    where = "%s: panel %r %s" % (base, panel.get("title"), t.get("refId"))
                    found.append((where, substitute(expr, where)))
        for var in (dash.get("templating") or {}).get("list") or []:
            if var.get("type") != "query" or is_loki(var.get("datasource")):
                continue
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            m = re.fullmatch(r"\s*(?:label_values|query_result)\((.*?)(?:,\s*[A-Za-z_][A-Za-z0-9_]*)?\)\s*", query or "", re.S)
            if m and m.group(1).strip():
                where = "%s: variable %s" % (base, var.get("name"))
                found.append((where, substitute(m.group(1), where)))
    return found


def rule_exprs():
    found = []
    for path in sorted(glob.glob(os.path.join(RULES, "*.yml"))):
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("alert") or rule.get("record")
                found.append(("%s: %s" % (rel(path), name), rule["expr"]))
    return found


def metric_names(expr):
    """Identifiers of `expr` that name series (not functions, labels, keywords or durations)."""
    e = STRING.sub('""', expr)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\[\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)", e):
        word = m.group(1)
        if word in KEYWORDS or re.match(r"\s*\(", e[m.end():]):
            continue
        names.add(word)
    return names


def cmd_dashboard_rules(out):
    exprs = dashboard_exprs()
    rules = [{"record": "dashboard:expr_%d" % i, "expr": expr, "labels": {"source": where}}
             for i, (where, expr) in enumerate(exprs, 1)]
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, f, sort_keys=False, width=1000)
    print("  %d dashboard expressions written to a rules file" % len(rules))


def cmd_metric_names():
    with open(METRICS, encoding="utf-8") as f:
        known = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    problems = 0
    for label, exprs in (("dashboards", dashboard_exprs()), ("alert rules", rule_exprs())):
        used = set()
        for where, expr in exprs:
            for name in metric_names(expr):
                base = name
                for suffix in ("_bucket", "_sum", "_count"):
                    if name.endswith(suffix) and name[: -len(suffix)] in known:
                        base = name[: -len(suffix)]
                used.add(base)
                if base not in known and base not in SYNTHETIC:
                    problems += 1
                    print("  FAIL: %s uses %s, which is not in infrastructure/metrics.txt" % (where, name), file=sys.stderr)
        print("  %s use %d metric families: %s" % (label, len(used), " ".join(sorted(used))))
    sys.exit(1 if problems else 0)


def cmd_rule_tests():
    alerts = {name.split(": ", 1)[1] for name, _ in rule_exprs()}
    fires, quiet = set(), set()
    for path in sorted(glob.glob(os.path.join(RULE_TESTS, "*.yml"))):
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        for test in doc.get("tests") or []:
            for t in test.get("alert_rule_test") or []:
                (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    problems = 0
    for alert in sorted(alerts):
        for kind, seen in (("firing", fires), ("not firing", quiet)):
            if alert not in seen:
                problems += 1
                print("  FAIL: no promtool test shows %s %s" % (alert, kind), file=sys.stderr)
    problems += check_absent_twin()
    unknown = (fires | quiet) - alerts
    for alert in sorted(unknown):
        problems += 1
        print("  FAIL: the tests name %s, which no rule defines" % alert, file=sys.stderr)
    if problems:
        sys.exit(1)
    print("  %d alerts, each tested firing and not firing" % len(alerts))


SERVICE_JOBS = {"erp-gateway", "erp-auth", "erp-event"}


def check_absent_twin():
    """ErpServiceDown also fires for a service with no target at all: an absent() rule covers each
    job, and a test shows it firing for a job whose `up` series is missing or goes stale."""
    problems = 0
    covered = set()
    for path in sorted(glob.glob(os.path.join(RULES, "*.yml"))):
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        for group in doc.get("groups") or []:
            for rule in group.get("rules") or []:
                if rule.get("alert") == "ErpServiceDown":
                    covered |= set(re.findall(r'absent\(\s*up\{job="([^"]+)"\}\s*\)', rule["expr"]))
    if covered != SERVICE_JOBS:
        problems += 1
        print("  FAIL: ErpServiceDown's absent() twin covers %s, expected %s" % (sorted(covered), sorted(SERVICE_JOBS)), file=sys.stderr)
    shown = set()
    for path in sorted(glob.glob(os.path.join(RULE_TESTS, "*.yml"))):
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        for test in doc.get("tests") or []:
            up = {}
            for series in test.get("input_series") or []:
                m = re.match(r'\s*up\{.*job="([^"]+)"', series["series"])
                if m:
                    up[m.group(1)] = str(series["values"]).split()
            for t in test.get("alert_rule_test") or []:
                if t["alertname"] != "ErpServiceDown":
                    continue
                for alert in t.get("exp_alerts") or []:
                    job = (alert.get("exp_labels") or {}).get("job")
                    if job not in up or up[job][-1] == "stale":
                        shown.add(job)
    if not shown:
        problems += 1
        print("  FAIL: no promtool test shows ErpServiceDown firing for a job without targets", file=sys.stderr)
    else:
        print("  ErpServiceDown's absent() twin covers %s; tested firing without targets for %s"
              % (", ".join(sorted(covered)), ", ".join(sorted(shown))))
    return problems


K8S_SD_ROLES = {"node", "pod", "service", "endpoints", "endpointslice", "ingress"}
K8S_SD_KEYS = {"role", "api_server", "kubeconfig_file", "namespaces", "selectors", "attach_metadata",
               "basic_auth", "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects",
               "enable_http2", "bearer_token", "bearer_token_file"}


def cmd_config_without_k8s_sd(src, out):
    with open(src, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    problems = 0
    for job in config.get("scrape_configs") or []:
        sds = job.pop("kubernetes_sd_configs", None)
        if sds is None:
            continue
        for sd in sds:
            if sd.get("role") not in K8S_SD_ROLES:
                problems += 1
                print("  FAIL: job %s: kubernetes_sd_configs role %r" % (job.get("job_name"), sd.get("role")), file=sys.stderr)
            for key in set(sd) - K8S_SD_KEYS:
                problems += 1
                print("  FAIL: job %s: unknown kubernetes_sd_configs field %r" % (job.get("job_name"), key), file=sys.stderr)
        # The relabelling stays, and promtool still checks it.
        job["static_configs"] = (job.get("static_configs") or []) + [{"targets": ["k8s-sd.invalid:9464"]}]
        print("  note: job %s: kubernetes_sd_configs checked here; promtool checks the rest" % job.get("job_name"))
    # The copy lives elsewhere: make the paths it names relative to the original absolute.
    here = os.path.dirname(os.path.abspath(src))
    config["rule_files"] = [os.path.join(here, p) for p in config.get("rule_files") or []]
    for job in config.get("scrape_configs") or []:
        for sd in job.get("file_sd_configs") or []:
            sd["files"] = [os.path.join(here, p) for p in sd.get("files") or []]
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    sys.exit(1 if problems else 0)


def cmd_live(url, seconds):
    import time
    import urllib.error
    import urllib.request

    def get(path):
        with urllib.request.urlopen(url + path, timeout=5) as r:
            return r.status, r.read().decode()

    deadline = time.monotonic() + float(seconds)
    while True:
        try:
            status, _ = get("/-/ready")
            if status == 200:
                break
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            print("  FAIL: Prometheus at %s was not ready within %ss" % (url, seconds), file=sys.stderr)
            sys.exit(1)
        time.sleep(0.3)
    problems = 0
    want = len(rule_exprs())
    rules = json.loads(get("/api/v1/rules")[1])["data"]["groups"]
    loaded = [r for g in rules for r in g["rules"]]
    bad = [r["name"] for r in loaded if r.get("health") not in ("ok", "unknown")]
    if len(loaded) != want or bad:
        problems += 1
        print("  FAIL: Prometheus loaded %d rules (want %d), unhealthy: %s" % (len(loaded), want, bad), file=sys.stderr)
    # Discovered targets reach the scrape manager a few seconds after start.
    while True:
        targets = json.loads(get("/api/v1/targets")[1])["data"]["activeTargets"]
        jobs = sorted({t["labels"].get("job") for t in targets if t.get("scrapePool") == "erp-local"})
        if jobs == sorted(SERVICE_JOBS) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if jobs != sorted(SERVICE_JOBS):
        problems += 1
        print("  FAIL: the erp-local scrape pool has jobs %s, want %s" % (jobs, sorted(SERVICE_JOBS)), file=sys.stderr)
    if problems:
        sys.exit(1)
    print("  Prometheus ready at %s: %d rules loaded, erp-local targets %s" % (url, len(loaded), ", ".join(jobs)))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "dashboard-rules":
        cmd_dashboard_rules(*args)
    elif cmd == "metric-names":
        cmd_metric_names()
    elif cmd == "rule-tests":
        cmd_rule_tests()
    elif cmd == "config-without-k8s-sd":
        cmd_config_without_k8s_sd(*args)
    elif cmd == "live":
        cmd_live(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
