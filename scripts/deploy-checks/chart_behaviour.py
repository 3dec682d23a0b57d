"""Step 10: what the chart does when values change, and the labels logs are found by.

usage: chart_behaviour.py HELM_BINARY KUBE_VERSION

Renders the chart (values-dev.yaml as the base) with helm and checks:

* rollouts per component: for each change below, a service's pod template changes (its
  checksum/config or checksum/secret annotation) exactly when that service's own ConfigMap data
  or Secret inputs change — a gateway setting restarts the gateway only, a shared setting all three;
* image digests: with <service>.image.digest set the reference is <registry>/<repository>@<digest>
  for that service only;
* ServiceMonitor scrape bounds: values.yaml sets sampleLimit and labelLimit (> 0), the
  ServiceMonitor carries them, and infrastructure/prometheus's erp jobs use the same limits;
* service names: every pod template of the chart carries the annotation
  resource.opentelemetry.io/service.name and the label service_name, equal to each other and, for
  the three services, to OTEL_SERVICE_NAME; the dashboards' Loki queries select only names that
  exist; infrastructure/loki/config.alloy's relabelling (evaluated here, rule by rule) gives each
  pod that same service_name, and so does a collector that reads only the annotation (Grafana's
  k8s-monitoring) or only copies pod labels (Promtail's labelmap);
* Alloy (infrastructure/k8s/alloy.yaml) has no liveness probe on /-/healthy, which fails whenever
  any one component is unhealthy and would restart Alloy for a Loki outage.
"""

import glob
import json
import os
import re
import subprocess
import sys

import yaml

from common import ROOT, WORKLOAD_KINDS, fail, pod_spec

CHART = os.path.join(ROOT, "helm", "event-reward-platform")
DEV_VALUES = os.path.join(CHART, "values-dev.yaml")
SERVICES = ("gateway", "auth", "event")
SERVICE_NAME_ANNOTATION = "resource.opentelemetry.io/service.name"
SERVICE_NAME_LABEL = "service_name"
DIGEST = "sha256:" + "ab" * 32

# (description, --set arguments, services whose ConfigMap or Secret inputs the change touches).
CHANGES = [
    ("a gateway setting", ["gateway.rateLimitPerMinute=77"], {"gateway"}),
    ("an auth setting", ["auth.loginMaxFailures=9"], {"auth"}),
    ("an event setting", ["event.jobsIntervalSecs=17"], {"event"}),
    ("auth's port (the gateway dials it)", ["auth.port=50061"], {"gateway", "auth"}),
    ("the shared log filter", ["config.rustLog=debug"], set(SERVICES)),
    ("the bootstrap admin's password (auth's Secret)", ["bootstrapAdmin.password=another-password-42"], {"auth"}),
    ("the service-identity key (all three mount it)", ["serviceIdentity.key=another-development-identity-key-0123456789"], set(SERVICES)),
    ("the delivery webhook (event)", ["event.delivery.webhookUrl=https://game.example/hook",
                                      "event.delivery.webhookSecret=a-signing-secret"], {"event"}),
]


class Checker:
    def __init__(self, helm_bin, kube_version):
        self.helm_bin = helm_bin
        self.kube_version = kube_version
        self.problems = 0

    def check(self, ok, message):
        if not ok:
            self.problems += 1
            fail(message)
        return ok

    def render(self, sets=(), values=(DEV_VALUES,)):
        cmd = [self.helm_bin, "template", "erp", CHART, "--namespace", "erp", "--kube-version", self.kube_version]
        for v in values:
            cmd += ["--values", v]
        for s in sets:
            cmd += ["--set", s]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit("  FAIL: helm template %s: %s" % (" ".join(sets), done.stderr.strip()))
        return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_name(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_metadata(workload):
    return workload["spec"]["template"]["metadata"]


def check_rollouts(c):
    base = c.render()
    base_deploy, base_cm = by_name(base, "Deployment"), by_name(base, "ConfigMap")
    for what, sets, touched in CHANGES:
        changed = c.render(sets)
        deploy, cm = by_name(changed, "Deployment"), by_name(changed, "ConfigMap")
        rolled = set()
        for service in SERVICES:
            name = "erp-" + service
            before, after = pod_metadata(base_deploy[name]), pod_metadata(deploy[name])
            if before != after:
                rolled.add(service)
            # The config checksum follows the ConfigMap's data exactly.
            data_changed = base_cm[name].get("data") != cm[name].get("data")
            sum_changed = before["annotations"].get("checksum/config") != after["annotations"].get("checksum/config")
            c.check(data_changed == sum_changed,
                    "%s: ConfigMap %s %s but its checksum/config %s" % (
                        what, name, "changed" if data_changed else "did not change",
                        "did too" if sum_changed else "did not"))
        c.check(rolled == touched, "%s rolls the pods of %s, expected %s" % (what, sorted(rolled), sorted(touched)))
    if not c.problems:
            print("  %d changes each roll exactly the services they touch (checksum/config and checksum/secret per component)"
              % len(CHANGES))


def check_digests(c):
    objs = c.render(["gateway.image.digest=" + DIGEST])
    deploy = by_name(objs, "Deployment")
    image = {s: deploy["erp-" + s]["spec"]["template"]["spec"]["containers"][0]["image"] for s in SERVICES}
    c.check(image["gateway"] == "erp-gateway@" + DIGEST, "gateway.image.digest: image is %r" % image["gateway"])
    c.check(image["auth"] == "erp-auth:dev" and image["event"] == "erp-event:dev",
            "gateway.image.digest changed other images: %s" % image)
    objs = c.render(["gateway.image.digest=" + DIGEST], values=())
    deploy = by_name(objs, "Deployment")
    got = deploy["erp-gateway"]["spec"]["template"]["spec"]["containers"][0]["image"]
    c.check(got == "ghcr.io/example/erp-gateway@" + DIGEST, "digest with a registry: image is %r" % got)
    print("  <service>.image.digest: %s" % got)


def check_service_monitor(c):
    with open(os.path.join(CHART, "values.yaml"), encoding="utf-8") as f:
        sm_values = yaml.safe_load(f)["metrics"]["serviceMonitor"]
    for key in ("sampleLimit", "labelLimit"):
        c.check(isinstance(sm_values.get(key), int) and sm_values[key] > 0,
                "values.yaml: metrics.serviceMonitor.%s is %r, expected a positive default" % (key, sm_values.get(key)))
    objs = c.render(["metrics.serviceMonitor.enabled=true"])
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    if c.check(len(monitors) == 1, "metrics.serviceMonitor.enabled renders %d ServiceMonitors" % len(monitors)):
        spec = monitors[0]["spec"]
        for key in ("sampleLimit", "labelLimit"):
            c.check(spec.get(key) == sm_values.get(key), "ServiceMonitor %s is %r, values.yaml says %r" % (key, spec.get(key), sm_values.get(key)))
        print("  ServiceMonitor: sampleLimit %s, labelLimit %s" % (spec.get("sampleLimit"), spec.get("labelLimit")))
    # The plain Prometheus configs bound the same scrapes the same way.
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        with open(os.path.join(ROOT, "infrastructure", "prometheus", name), encoding="utf-8") as f:
            config = yaml.safe_load(f)
        for job in config.get("scrape_configs") or []:
            if not job["job_name"].startswith("erp-"):
                continue
            got = (job.get("sample_limit"), job.get("label_limit"))
            want = (sm_values.get("sampleLimit"), sm_values.get("labelLimit"))
            c.check(got == want, "%s job %s: sample_limit/label_limit %s, the chart's ServiceMonitor %s" % (name, job["job_name"], got, want))


# --- Alloy's relabelling, evaluated -------------------------------------------------------------
def meta_name(text):
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def pod_discovery_labels(workload, container):
    """The __meta_kubernetes_* labels Prometheus/Alloy Kubernetes discovery gives this pod."""
    meta = pod_metadata(workload)
    labels = {
        "__meta_kubernetes_namespace": "erp",
        "__meta_kubernetes_pod_name": workload["metadata"]["name"] + "-0",
        "__meta_kubernetes_pod_container_name": container,
    }
    for k, v in (meta.get("labels") or {}).items():
        labels["__meta_kubernetes_pod_label_" + meta_name(k)] = v
        labels["__meta_kubernetes_pod_labelpresent_" + meta_name(k)] = "true"
    for k, v in (meta.get("annotations") or {}).items():
        labels["__meta_kubernetes_pod_annotation_" + meta_name(k)] = v
        labels["__meta_kubernetes_pod_annotationpresent_" + meta_name(k)] = "true"
    return labels


def parse_alloy_rules(text, component):
    """The rule blocks of `discovery.relabel "<component>"` in an Alloy config, as dicts."""
    text = re.sub(r"//[^\n]*", "", text)
    start = text.find('discovery.relabel "%s"' % component)
    if start < 0:
        raise SystemExit("  FAIL: config.alloy has no discovery.relabel %r" % component)
    depth, i = 0, text.index("{", start)
    body_start = i
    while True:
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                break
        i += 1
    body = text[body_start + 1:i]
    rules = []
    for block in re.findall(r"rule\s*\{(.*?)\}", body, re.S):
        rule = {}
        for key, value in re.findall(r"(\w+)\s*=\s*(\[[^\]]*\]|\"(?:[^\"\\]|\\.)*\")", block):
            rule[key] = json.loads(value)
        rules.append(rule)
    return rules


def relabel(labels, rules):
    """Prometheus relabelling (replace, keep, drop, labelmap), as Alloy applies it; None: dropped."""
    labels = dict(labels)
    for r in rules:
        action = r.get("action", "replace")
        regex = re.compile("^(?:%s)$" % r.get("regex", "(.*)"))
        value = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels", []))
        if action == "keep":
            if not regex.match(value):
                return None
        elif action == "drop":
            if regex.match(value):
                return None
        elif action == "replace":
            m = regex.match(value)
            if m:
                target = r["target_label"]
                result = m.expand(re.sub(r"\$(\d+)|\$\{(\d+)\}", lambda g: "\\" + (g.group(1) or g.group(2)),
                                         r.get("replacement", "$1")))
                if result:
                    labels[target] = result
                else:
                    labels.pop(target, None)
        elif action == "labelmap":
            for k, v in list(labels.items()):
                m = regex.match(k)
                if m:
                    labels[m.expand(re.sub(r"\$(\d+)", r"\\\1", r.get("replacement", "$1")))] = v
        else:
            raise SystemExit("  FAIL: config.alloy: relabel action %r is not evaluated by this check" % action)
    return {k: v for k, v in labels.items() if not k.startswith("__")}


# How two common collectors derive service_name (abridged to the rules that decide it):
# Grafana's k8s-monitoring chart (the annotation first, then app.kubernetes.io/name) and a
# Promtail/Alloy `labelmap` of pod labels.
K8S_MONITORING_RULES = [{
    "source_labels": ["__meta_kubernetes_pod_annotation_resource_opentelemetry_io_service_name",
                      "__meta_kubernetes_pod_label_app_kubernetes_io_name", "__meta_kubernetes_pod_container_name"],
    "separator": ";", "regex": "^(?:;*)?([^;]+).*$", "replacement": "$1", "target_label": "service_name"}]
LABELMAP_RULES = [{"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"}]


def loki_service_names():
    """service_name matchers of every Loki query of the dashboards: (where, op, value)."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "infrastructure", "grafana", "dashboards", "*.json"))):
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)

        def walk(panels):
            for p in panels:
                yield p
                yield from walk(p.get("panels") or [])

        for panel in walk(dash.get("panels") or []):
            for t in panel.get("targets") or []:
                ds = t.get("datasource") or panel.get("datasource") or {}
                if isinstance(ds, dict) and ds.get("type") == "loki":
                    expr = t.get("expr", "")
                    matchers = re.findall(r'service_name\s*(=~|=|!=|!~)\s*"((?:[^"\\]|\\.)*)"', expr)
                    where = "%s: panel %r" % (os.path.basename(path), panel.get("title"))
                    if not matchers:
                        found.append((where, None, expr))
                    for op, value in matchers:
                        found.append((where, op, value.replace("\\\\", "\\")))
    return found


def check_service_names(c):
    objs = c.render()
    configmaps = by_name(objs, "ConfigMap")
    names = {}
    for w in objs:
        if w["kind"] not in WORKLOAD_KINDS:
            continue
        meta = pod_metadata(w)
        where = "%s/%s" % (w["kind"], w["metadata"]["name"])
        annotation = (meta.get("annotations") or {}).get(SERVICE_NAME_ANNOTATION)
        label = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        c.check(annotation, "%s: the pod template has no %s annotation" % (where, SERVICE_NAME_ANNOTATION))
        c.check(label == annotation, "%s: pod label %s=%r differs from the annotation %r" % (where, SERVICE_NAME_LABEL, label, annotation))
        component = (meta.get("labels") or {}).get("app.kubernetes.io/component")
        if component in SERVICES:
            otel = (configmaps.get(w["metadata"]["name"]) or {}).get("data", {}).get("OTEL_SERVICE_NAME")
            c.check(annotation == otel, "%s: service name %r, but OTEL_SERVICE_NAME is %r" % (where, annotation, otel))
        names[w["metadata"]["name"]] = (w, annotation)
    c.check({n for _, n in names.values()} >= {"erp-" + s for s in SERVICES},
            "the three services' pods are not all named: %s" % sorted(n for _, n in names.values()))

    # Every collector gives each pod the annotation's name as service_name.
    with open(os.path.join(ROOT, "infrastructure", "loki", "config.alloy"), encoding="utf-8") as f:
        alloy_rules = parse_alloy_rules(f.read(), "pods")
    for name, (w, annotation) in sorted(names.items()):
        container = pod_spec(w)["containers"][0]["name"]
        meta = pod_discovery_labels(w, container)
        for collector, rules in (("config.alloy", alloy_rules), ("k8s-monitoring", K8S_MONITORING_RULES),
                                 ("labelmap", LABELMAP_RULES)):
            out = relabel(meta, rules)
            got = (out or {}).get("service_name")
            c.check(got == annotation, "%s: %s gives service_name=%r for %s, expected %r" % (collector, name, got, name, annotation))
    # And Alloy derives it from the annotation, not from another label that happens to agree.
    without = {}
    for name, (w, annotation) in names.items():
        meta = pod_discovery_labels(w, "x")
        meta["__meta_kubernetes_pod_annotation_resource_opentelemetry_io_service_name"] = "from-annotation"
        meta.pop("__meta_kubernetes_pod_label_service_name", None)
        without[name] = (relabel(meta, alloy_rules) or {}).get("service_name")
    c.check(set(without.values()) == {"from-annotation"},
            "config.alloy: service_name does not follow the %s annotation: %s" % (SERVICE_NAME_ANNOTATION, without))

    # The dashboards ask for names that exist.
    existing = {n for _, n in names.values()}
    count = 0
    for where, op, value in loki_service_names():
        count += 1
        if op is None:
            c.check(False, "%s: Loki query without a service_name matcher: %s" % (where, value))
        elif op == "=":
            c.check(value in existing, "%s: service_name=%r, which no pod has (%s)" % (where, value, sorted(existing)))
        elif op == "=~":
            matched = {n for n in existing if re.fullmatch(value, n)}
            c.check(matched, "%s: service_name=~%r matches no pod's name" % (where, value))
    c.check(count > 0, "no Loki query found in the dashboards")
    print("  %d pod templates named by annotation and label; config.alloy, k8s-monitoring and labelmap agree; "
          "%d dashboard log queries select existing names" % (len(names), count))


def check_alloy_probe(c):
    with open(os.path.join(ROOT, "infrastructure", "k8s", "alloy.yaml"), encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    alloy = [d for d in docs if d.get("kind") in WORKLOAD_KINDS and d["metadata"]["name"] == "alloy"]
    if not c.check(alloy, "infrastructure/k8s/alloy.yaml: no alloy workload"):
        return
    for container in pod_spec(alloy[0])["containers"]:
        live = (container.get("livenessProbe") or {}).get("httpGet") or {}
        c.check(live.get("path") != "/-/healthy",
                "alloy: the liveness probe GETs /-/healthy, which fails when any component is unhealthy (restart loop)")
        ready = (container.get("readinessProbe") or {}).get("httpGet") or {}
        c.check(ready.get("path") == "/-/ready", "alloy: no readiness probe on /-/ready")
    print("  alloy: liveness is not /-/healthy; readiness /-/ready")


def main():
    c = Checker(sys.argv[1], sys.argv[2])
    check_rollouts(c)
    check_digests(c)
    check_service_monitor(c)
    check_service_names(c)
    check_alloy_probe(c)
    sys.exit(1 if c.problems else 0)


if __name__ == "__main__":
    main()
