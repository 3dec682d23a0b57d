"""Step 3: policy assertions over rendered manifests.

usage:
  policy.py chart NAME RENDERED.yaml [VALUES.yaml ...] [--production]
  policy.py plain NAME MANIFEST.yaml ...

Every container (both modes): liveness and readiness probes (init containers excepted), probe
ports that exist, resource requests and limits (cpu and memory), runAsNonRoot,
readOnlyRootFilesystem, allowPrivilegeEscalation false, all capabilities dropped, a RuntimeDefault
seccomp profile, not privileged, an image with a tag that is neither empty nor `latest`.

Chart renders also: Services select pods and name ports they have; referenced ConfigMaps and
Secrets are rendered or named in values as existing Secrets; the grace period outlasts the
preStop sleep plus ERP_SHUTDOWN_TIMEOUT_SECS; gRPC probes on auth and event, HTTP on the gateway;
a Deployment under an HPA sets no replicas; the Role grants exactly what the services use; every
Deployment has a PodDisruptionBudget and a NetworkPolicy when the values enable them. With
--production these must all be enabled, along with HPAs for gateway and event, a ServiceMonitor,
a PrometheusRule, the dashboards, an Ingress, and no bundled stores.
"""

import copy
import os
import re
import sys

import yaml

from common import ROOT, WORKLOAD_KINDS, load_documents, pod_spec, rel

CHART = os.path.join(ROOT, "helm", "event-reward-platform")
SERVICES = ("gateway", "auth", "event")


class Report:
    def __init__(self, name):
        self.name = name
        self.problems = []

    def check(self, ok, message):
        if not ok:
            self.problems.append(message)
        return ok


def merge(base, override):
    """Helm's value coalescing: maps merge recursively, null deletes, the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def image_ok(image):
    if not image:
        return False
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.rsplit(":", 1)[1]
    return bool(tag) and tag != "latest"


def container_ports(container):
    names, numbers = set(), set()
    for p in container.get("ports") or []:
        if p.get("name"):
            names.add(p["name"])
        numbers.add(p.get("containerPort"))
    return names, numbers


def probe_port(probe):
    for kind in ("httpGet", "tcpSocket", "grpc"):
        if kind in probe:
            return kind, probe[kind].get("port")
    return ("exec" if "exec" in probe else None), None


def check_containers(report, obj):
    where = "%s/%s" % (obj["kind"], obj["metadata"]["name"])
    spec = pod_spec(obj)
    if spec is None:
        return
    pod_sc = spec.get("securityContext") or {}
    regular = [(c, False) for c in spec.get("containers") or []]
    init = [(c, True) for c in spec.get("initContainers") or []]
    for c, is_init in regular + init:
        cw = "%s container %s" % (where, c.get("name"))
        sc = c.get("securityContext") or {}
        report.check(image_ok(c.get("image")), "%s: image %r has no tag, an empty tag or `latest`" % (cw, c.get("image")))
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                report.check((res.get(part) or {}).get(r) not in (None, ""), "%s: no resources.%s.%s" % (cw, part, r))
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        report.check(run_as_non_root is True, "%s: runAsNonRoot is not true" % cw)
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        report.check(user != 0, "%s: runAsUser is 0" % cw)
        report.check(sc.get("readOnlyRootFilesystem") is True, "%s: readOnlyRootFilesystem is not true" % cw)
        report.check(sc.get("allowPrivilegeEscalation") is False, "%s: allowPrivilegeEscalation is not false" % cw)
        report.check(not sc.get("privileged"), "%s: privileged" % cw)
        drop = ((sc.get("capabilities") or {}).get("drop")) or []
        report.check("ALL" in drop, "%s: capabilities.drop does not contain ALL" % cw)
        report.check(not ((sc.get("capabilities") or {}).get("add")), "%s: adds capabilities" % cw)
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        report.check(seccomp == "RuntimeDefault", "%s: seccompProfile is not RuntimeDefault" % cw)
        if is_init:
            continue
        names, numbers = container_ports(c)
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = c.get(probe_name)
            if probe is None:
                report.check(probe_name == "startupProbe", "%s: no %s" % (cw, probe_name))
                continue
            kind, port = probe_port(probe)
            report.check(kind is not None, "%s: %s has no handler" % (cw, probe_name))
            if port is not None:
                ok = port in names if isinstance(port, str) else port in numbers
                report.check(ok, "%s: %s uses port %r, which the container does not declare" % (cw, probe_name, port))


def check_chart(report, objs, values, production):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    workloads = [o for o in objs if o["kind"] in WORKLOAD_KINDS]
    deployments = {o["metadata"]["name"]: o for o in by_kind.get("Deployment", [])}
    rendered_names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    fullname = values.get("fullnameOverride") or "erp"

    # References to ConfigMaps and Secrets.
    external_secrets = {values[k].get("existingSecret") for k in ("mongodb", "redis", "jwt", "bootstrapAdmin")
                        if isinstance(values.get(k), dict)} - {None, ""}
    for w in workloads:
        spec = pod_spec(w)
        where = "%s/%s" % (w["kind"], w["metadata"]["name"])
        refs = []
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef:
                    refs.append(("ConfigMap", ef["configMapRef"]["name"]))
                if "secretRef" in ef:
                    refs.append(("Secret", ef["secretRef"]["name"]))
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                if "secretKeyRef" in vf:
                    refs.append(("Secret", vf["secretKeyRef"]["name"]))
                if "configMapKeyRef" in vf:
                    refs.append(("ConfigMap", vf["configMapKeyRef"]["name"]))
        for v in spec.get("volumes") or []:
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
        for kind, name in refs:
            ok = (kind, name) in rendered_names or (kind == "Secret" and name in external_secrets)
            report.check(ok, "%s: refers to %s %s, which is neither rendered nor an existingSecret in values" % (where, kind, name))
        sa = spec.get("serviceAccountName")
        if sa and sa != "default":
            report.check(("ServiceAccount", sa) in rendered_names, "%s: ServiceAccount %s is not rendered" % (where, sa))

    # Services select pods and use their ports.
    for svc in by_kind.get("Service", []):
        selector = svc["spec"].get("selector") or {}
        matches = [w for w in workloads if labels_match(selector, (w["spec"]["template"]["metadata"].get("labels") or {}))]
        if not report.check(matches, "Service/%s selects no pods" % svc["metadata"]["name"]):
            continue
        names = set()
        for w in matches:
            for c in pod_spec(w).get("containers") or []:
                names |= container_ports(c)[0]
        for p in svc["spec"].get("ports") or []:
            tp = p.get("targetPort")
            if isinstance(tp, str):
                report.check(tp in names, "Service/%s port %s targets %r, which its pods do not name" % (svc["metadata"]["name"], p.get("name"), tp))

    # Our three Deployments.
    configmaps = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
    numeric = re.compile(r"_(MS|SECS|KIB|ITERATIONS|PARALLELISM|FAILURES|MINUTE|MAX)$")
    for service in SERVICES:
        for key, value in ((configmaps.get("%s-%s" % (fullname, service)) or {}).get("data") or {}).items():
            if numeric.search(key):
                report.check(re.fullmatch(r"[0-9]+", str(value)) is not None,
                             "ConfigMap %s-%s: %s=%r is not a plain integer" % (fullname, service, key, value))
    for service in SERVICES:
        name = "%s-%s" % (fullname, service)
        d = deployments.get(name)
        if not report.check(d is not None, "Deployment %s is not rendered" % name):
            continue
        spec = pod_spec(d)
        c = spec["containers"][0]
        env = dict((configmaps.get(name) or {}).get("data") or {})
        shutdown = int(env.get("ERP_SHUTDOWN_TIMEOUT_SECS", 20))
        sleep = ((((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep")) or {}).get("seconds")
        report.check(sleep is not None, "%s: no preStop sleep (endpoints must drain before SIGTERM)" % name)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        report.check(grace > shutdown + (sleep or 0),
                     "%s: terminationGracePeriodSeconds %s <= preStop %s + ERP_SHUTDOWN_TIMEOUT_SECS %s" % (name, grace, sleep, shutdown))
        want = "httpGet" if service == "gateway" else "grpc"
        for probe_name in ("livenessProbe", "startupProbe"):
            kind, _ = probe_port(c.get(probe_name) or {})
            report.check(kind == want, "%s: %s should be %s" % (name, probe_name, want))
        ready = (c.get("readinessProbe") or {}).get("httpGet") or {}
        report.check(ready.get("path") == "/readyz", "%s: readinessProbe should GET /readyz on the admin port" % name)
        if service == "auth":
            report.check(spec.get("automountServiceAccountToken") is False, "%s: mounts a ServiceAccount token it never uses" % name)
        tag = c["image"].rsplit(":", 1)[-1]
        report.check(tag not in ("", "latest"), "%s: image tag %r" % (name, tag))

    # HPAs.
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    for target in hpa_targets:
        d = deployments.get(target)
        if report.check(d is not None, "HPA targets Deployment %s, which is not rendered" % target):
            report.check("replicas" not in d["spec"], "Deployment/%s sets replicas although an HPA scales it" % target)

    # RBAC.
    roles = by_kind.get("Role", [])
    if values.get("serviceAccount", {}).get("create", True):
        granted = set()
        for r in roles:
            for rule in r.get("rules") or []:
                for g in rule.get("apiGroups") or []:
                    for res in rule.get("resources") or []:
                        for verb in rule.get("verbs") or []:
                            granted.add((g, res, verb))
        wanted = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")} | \
                 {("discovery.k8s.io", "endpointslices", v) for v in ("get", "list", "watch")}
        report.check(granted == wanted, "Role grants %s, expected exactly %s" % (sorted(granted), sorted(wanted)))

    # PDBs and NetworkPolicies.
    pod_workloads = [w for w in workloads if w["kind"] in ("Deployment", "StatefulSet")]
    pdbs = by_kind.get("PodDisruptionBudget", [])
    policies = by_kind.get("NetworkPolicy", [])
    np_enabled = (values.get("networkPolicy") or {}).get("enabled")
    for w in pod_workloads:
        labels = w["spec"]["template"]["metadata"].get("labels") or {}
        component = labels.get("app.kubernetes.io/component")
        where = "%s/%s" % (w["kind"], w["metadata"]["name"])
        if w["kind"] == "Deployment" and (values.get(component) or {}).get("pdb", {}).get("enabled"):
            report.check(any(labels_match(p["spec"]["selector"].get("matchLabels"), labels) for p in pdbs),
                         "%s has no PodDisruptionBudget" % where)
        if np_enabled:
            report.check(any(labels_match(p["spec"]["podSelector"].get("matchLabels"), labels) for p in policies),
                         "%s is selected by no NetworkPolicy" % where)

    if production:
        report.check(np_enabled, "production: networkPolicy.enabled is false")
        for service in SERVICES:
            report.check((values.get(service) or {}).get("pdb", {}).get("enabled"), "production: %s.pdb.enabled is false" % service)
            cfg = values.get(service) or {}
            replicas = cfg["autoscaling"]["minReplicas"] if cfg.get("autoscaling", {}).get("enabled") else cfg.get("replicaCount", 0)
            report.check(replicas >= 3, "production: %s runs %s replica(s), expected at least 3" % (service, replicas))
        for service in ("gateway", "event"):
            report.check("%s-%s" % (fullname, service) in hpa_targets, "production: no HPA for %s" % service)
        for kind in ("ServiceMonitor", "PrometheusRule", "Ingress"):
            report.check(by_kind.get(kind), "production: no %s rendered" % kind)
        report.check(any((o["metadata"].get("labels") or {}).get("grafana_dashboard") == "1" for o in by_kind.get("ConfigMap", [])),
                     "production: no Grafana dashboard ConfigMaps")
        report.check(not by_kind.get("StatefulSet"), "production: bundled stores are rendered")
        for service in SERVICES:
            labels = deployments.get("%s-%s" % (fullname, service), {}).get("spec", {}).get("template", {}).get("spec", {})
            report.check(labels.get("topologySpreadConstraints"), "production: %s has no topologySpreadConstraints" % service)
        # Secrets must all come from existingSecret: nothing sensitive in the release.
        report.check(not by_kind.get("Secret"), "production: the chart renders Secrets (%s); use existingSecret"
                     % [s["metadata"]["name"] for s in by_kind.get("Secret", [])])

    # The gateway is the only Service that is not headless among ours; auth and event are headless.
    for service in ("auth", "event"):
        svc = next((s for s in by_kind.get("Service", []) if s["metadata"]["name"] == "%s-%s" % (fullname, service)), None)
        if report.check(svc is not None, "Service %s-%s is not rendered" % (fullname, service)):
            report.check(svc["spec"].get("clusterIP") == "None", "Service %s-%s is not headless" % (fullname, service))


def main():
    args = sys.argv[1:]
    production = "--production" in args
    args = [a for a in args if a != "--production"]
    mode, name, files = args[0], args[1], args[2:]
    report = Report(name)
    if mode == "chart":
        rendered, value_files = files[0], files[1:]
        objs = load_documents(rendered)
        with open(os.path.join(CHART, "values.yaml"), encoding="utf-8") as f:
            values = yaml.safe_load(f)
        for vf in value_files:
            with open(vf, encoding="utf-8") as f:
                values = merge(values, yaml.safe_load(f) or {})
        for o in objs:
            check_containers(report, o)
        check_chart(report, objs, values, production)
        count = len(objs)
    elif mode == "plain":
        count = 0
        for path in files:
            for o in load_documents(path):
                check_containers(report, o)
                count += 1
    else:
        sys.exit(__doc__)
    for p in report.problems:
        print("  FAIL: %s: %s" % (name, p), file=sys.stderr)
    if report.problems:
        sys.exit(1)
    print("  %s: %d objects pass the policy%s" % (name, count, " (production)" if production else ""))


if __name__ == "__main__":
    main()
