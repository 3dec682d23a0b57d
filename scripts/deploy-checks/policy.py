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
preStop sleep plus ERP_SHUTDOWN_TIMEOUT_SECS; gRPC probes on auth and event (HTTP under Linkerd),
HTTP on the gateway; a Deployment under an HPA sets no replicas; every Deployment has a
PodDisruptionBudget when the values enable it.

Security (the "trust model", see docs/deployment.md):
* ServiceAccounts: each service runs as its own ServiceAccount; the chart's ServiceAccounts mount
  no token; a pod mounts one only where it uses the API; each Role grants exactly what its code
  uses (gateway/auth: EndpointSlices list+watch; event: get/update/patch on its Lease by
  resourceName, plus create, which Kubernetes cannot restrict by name); no ClusterRoles.
* NetworkPolicies are on in the chart's values.yaml and render by default. When on: a default
  deny of ingress for every pod of the release; auth's gRPC port reachable only from the gateway,
  event's only from the gateway and auth, the gateway's HTTP port from anywhere (or the configured
  peers); admin ports only from Prometheus; no other port open; egress of each service only on
  named ports, to the services it calls, and to the API server only where it uses it; event's
  egress to the delivery webhook exactly when event.delivery.webhookUrl is set (its ports and
  peers).
* The service-identity key file (ERP_SERVICE_IDENTITY_KEY_FILE) is mounted read-only from a
  Secret into all three services (a generated or given key has >= 32 bytes).
* grpcTls: the TLS env files are mounted read-only and the gRPC URLs are https.
* mesh.linkerd: the inject annotation on the three pods (only then); a Server with accessPolicy
  deny on the gRPC ports of auth and event, an AuthorizationPolicy requiring a
  MeshTLSAuthentication of exactly the gateway's ServiceAccount (auth) and the gateway's and
  auth's (event).

With --production: the above, NetworkPolicies, PDBs, HPAs for gateway and event, a
ServiceMonitor, a PrometheusRule, the dashboards, an Ingress, no bundled stores, no Secrets.
"""

import base64
import copy
import os
import posixpath
import re
import sys
import urllib.parse

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


def rendered_deployments(deployments, fullname):
    """(service, Deployment name, Deployment) for each service whose Deployment is rendered."""
    for service in SERVICES:
        name = "%s-%s" % (fullname, service)
        d = deployments.get(name)
        if d is not None:
            yield service, name, d


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


def load_chart_values():
    with open(os.path.join(CHART, "values.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def env_of(container):
    return {e["name"]: e for e in container.get("env") or []}


def uses_api(values, service):
    return service == "event" or bool((values.get(service) or {}).get("kubernetesDiscovery"))


def webhook_egress(values):
    """(ports, peers or None) event's egress to the delivery webhook must allow, None without a
    webhook URL: networkPolicy.deliveryWebhook.ports, else the URL's port, else 443/80."""
    url = ((values.get("event") or {}).get("delivery") or {}).get("webhookUrl")
    if not url:
        return None
    cfg = (values.get("networkPolicy") or {}).get("deliveryWebhook") or {}
    ports = set(cfg.get("ports") or [])
    if not ports:
        parsed = urllib.parse.urlsplit(url)
        ports = {parsed.port or (443 if parsed.scheme == "https" else 80)}
    return ports, cfg.get("to") or None


def role_rules(role):
    """Rules as (apiGroup, resource, verb, resourceNames) tuples."""
    out = set()
    for rule in role.get("rules") or []:
        names = tuple(sorted(rule.get("resourceNames") or []))
        for g in rule.get("apiGroups") or []:
            for res in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add((g, res, verb, names))
    return out


def check_service_accounts(report, by_kind, deployments, configmaps, values, fullname):
    """One ServiceAccount per service, tokens only where the API is used, least-privilege Roles."""
    sa_values = values.get("serviceAccount") or {}
    create = sa_values.get("create", True)
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind.get("ServiceAccount", [])}
    roles = {r["metadata"]["name"]: r for r in by_kind.get("Role", [])}
    bindings = by_kind.get("RoleBinding", [])
    report.check(not by_kind.get("ClusterRole") and not by_kind.get("ClusterRoleBinding"),
                 "the chart renders ClusterRoles or ClusterRoleBindings; the services need namespaced rights only")
    used = {}
    for service, name, d in rendered_deployments(deployments, fullname):
        spec = pod_spec(d)
        sa = spec.get("serviceAccountName")
        used[service] = sa
        report.check(sa not in (None, "", "default") or not create,
                     "%s: runs as the namespace's default ServiceAccount" % name)
        want_token = uses_api(values, service)
        report.check(spec.get("automountServiceAccountToken") is want_token,
                     "%s: automountServiceAccountToken is %r, expected %r (a token only where the API is used)"
                     % (name, spec.get("automountServiceAccountToken"), want_token))
        if not create:
            continue
        account = accounts.get(sa)
        if not report.check(account is not None, "%s: its ServiceAccount %s is not rendered" % (name, sa)):
            continue
        report.check(account.get("automountServiceAccountToken") is False,
                     "ServiceAccount %s: automountServiceAccountToken is not false (pods opt in)" % sa)
        bound = [b["roleRef"]["name"] for b in bindings
                 if any(s.get("kind") == "ServiceAccount" and s.get("name") == sa for s in b.get("subjects") or [])]
        granted = set()
        for role_name in bound:
            role = roles.get(role_name)
            if report.check(role is not None, "RoleBinding of %s refers to Role %s, which is not rendered" % (sa, role_name)):
                granted |= role_rules(role)
        if service == "event":
            lease = ((configmaps.get(name) or {}).get("data") or {}).get("ERP_KUBERNETES_LEASE_NAME")
            report.check(bool(lease), "%s: no ERP_KUBERNETES_LEASE_NAME" % name)
            # get/update/patch only on its own Lease (resourceName); create cannot be restricted
            # by name in Kubernetes, so it stands alone.
            wanted = {("coordination.k8s.io", "leases", v, (lease,)) for v in ("get", "update", "patch")} | \
                     {("coordination.k8s.io", "leases", "create", ())}
            unrestricted = [r for r in granted if r[2] != "create" and not r[3]]
            report.check(not unrestricted, "Role of %s: %s not restricted to the Lease %r by resourceName"
                         % (sa, sorted(unrestricted), lease))
        elif want_token:
            wanted = {("discovery.k8s.io", "endpointslices", v, ()) for v in ("list", "watch")}
        else:
            wanted = set()
        report.check(granted == wanted, "ServiceAccount %s (%s) is granted %s, expected exactly %s"
                     % (sa, service, sorted(granted), sorted(wanted)))
    if len(used) == len(SERVICES):
        report.check(len(set(used.values())) == len(SERVICES),
                     "gateway, auth and event share a ServiceAccount (%s); each needs its own" % used)
    # Every Role is bound and every rendered ServiceAccount is used by one of our workloads.
    bound_roles = {b["roleRef"]["name"] for b in bindings}
    for role in roles:
        report.check(role in bound_roles, "Role %s is bound to nobody" % role)
    workload_accounts = {pod_spec(w).get("serviceAccountName") for w in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])}
    for sa in accounts:
        report.check(sa in workload_accounts, "ServiceAccount %s is used by no workload" % sa)


def secret_volume_file(spec, container, path):
    """(secretName, key) behind the file `path` in a read-only Secret volume mount, else None."""
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        mount = m["mountPath"].rstrip("/")
        if posixpath.dirname(path) != mount or m.get("subPath"):
            continue
        v = volumes.get(m["name"]) or {}
        if "secret" not in v or not m.get("readOnly"):
            return None
        filename = posixpath.basename(path)
        items = v["secret"].get("items")
        if items is None:
            return v["secret"]["secretName"], filename
        for item in items:
            if item["path"] == filename:
                return v["secret"]["secretName"], item["key"]
    return None


def check_service_identity(report, by_kind, deployments, values, fullname):
    """ERP_SERVICE_IDENTITY_KEY_FILE: a read-only Secret file in all three services, >= 32 bytes."""
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    existing = (values.get("serviceIdentity") or {}).get("existingSecret")
    for _, name, d in rendered_deployments(deployments, fullname):
        spec = pod_spec(d)
        c = spec["containers"][0]
        var = env_of(c).get("ERP_SERVICE_IDENTITY_KEY_FILE")
        if not report.check(var is not None and var.get("value"), "%s: no ERP_SERVICE_IDENTITY_KEY_FILE" % name):
            continue
        source = secret_volume_file(spec, c, var["value"])
        if not report.check(source is not None, "%s: ERP_SERVICE_IDENTITY_KEY_FILE=%s is not a file of a read-only Secret volume"
                            % (name, var["value"])):
            continue
        secret_name, key = source
        accepted = [f for f in ((env_of(c).get("ERP_SERVICE_IDENTITY_ACCEPT_KEY_FILES") or {}).get("value") or "").split(",") if f]
        for f in accepted:
            other = secret_volume_file(spec, c, f)
            report.check(other is not None and other[0] == secret_name,
                         "%s: accepted identity key %s is not a file of the read-only Secret %s" % (name, f, secret_name))
        if existing:
            report.check(secret_name == existing, "%s: the identity key comes from Secret %s, not serviceIdentity.existingSecret %s"
                         % (name, secret_name, existing))
            continue
        secret = secrets.get(secret_name)
        if not report.check(secret is not None, "%s: the identity key Secret %s is not rendered" % (name, secret_name)):
            continue
        raw = (secret.get("data") or {}).get(key)
        value = base64.b64decode(raw) if raw else ((secret.get("stringData") or {}).get(key) or "").encode()
        report.check(len(value) >= 32, "Secret %s: key %s has %d bytes, fewer than 32" % (secret_name, key, len(value)))


def check_grpc_tls(report, by_kind, deployments, configmaps, values, fullname):
    tls = values.get("grpcTls") or {}
    files = {"ERP_GRPC_TLS_CERT_FILE": "/etc/erp/grpc-tls/tls.crt",
             "ERP_GRPC_TLS_KEY_FILE": "/etc/erp/grpc-tls/tls.key",
             "ERP_GRPC_TLS_CA_FILE": "/etc/erp/grpc-tls/ca.crt"}
    for _, name, d in rendered_deployments(deployments, fullname):
        spec = pod_spec(d)
        c = spec["containers"][0]
        env = env_of(c)
        data = (configmaps.get(name) or {}).get("data") or {}
        urls = {k: v for k, v in data.items() if k in ("ERP_AUTH_URL", "ERP_EVENT_URL")}
        if not tls.get("enabled"):
            report.check(not any(k in env for k in files), "%s: TLS files set although grpcTls is off" % name)
            report.check(all(v.startswith("http://") for v in urls.values()), "%s: https URLs without grpcTls: %s" % (name, urls))
            continue
        report.check(all(v.startswith("https://") for v in urls.values()), "%s: grpcTls is on but the URLs are %s" % (name, urls))
        for var, path in files.items():
            got = (env.get(var) or {}).get("value")
            if report.check(got == path, "%s: %s is %r, expected %s" % (name, var, got, path)):
                source = secret_volume_file(spec, c, path)
                report.check(source is not None and source[1] == posixpath.basename(path),
                             "%s: %s is not the key %s of a read-only Secret volume" % (name, path, posixpath.basename(path)))
    certs = by_kind.get("Certificate", [])
    if tls.get("enabled") and (tls.get("certManager") or {}).get("issuerRef"):
        if report.check(len(certs) == 1, "grpcTls.certManager.issuerRef is set but %d Certificates are rendered" % len(certs)):
            dns = set(certs[0]["spec"].get("dnsNames") or [])
            for service in ("auth", "event"):
                report.check("%s-%s" % (fullname, service) in dns, "Certificate: no DNS name %s-%s" % (fullname, service))
            usages = set(certs[0]["spec"].get("usages") or [])
            report.check({"server auth", "client auth"} <= usages, "Certificate: usages %s lack server auth or client auth" % sorted(usages))
    else:
        report.check(not certs, "a Certificate is rendered without grpcTls.certManager.issuerRef")


def ingress_peers(policies, labels, port, port_name):
    """Who may connect to `port` (number or name) of pods with `labels`: None = anyone (not
    isolated, or a rule without `from`), else the list of NetworkPolicyPeers."""
    selected = [p for p in policies if labels_match(p["spec"]["podSelector"].get("matchLabels"), labels)
                and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
    if not selected:
        return None
    peers = []
    for p in selected:
        for rule in p["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("port") in (port, port_name) for pp in ports):
                continue
            if not rule.get("from"):
                return None
            peers.extend(rule["from"])
    return peers


def peer_component(peer, values):
    """The component a plain same-namespace podSelector peer selects, else None."""
    if set(peer) != {"podSelector"}:
        return None
    labels = (peer["podSelector"] or {}).get("matchLabels") or {}
    if labels.get("app.kubernetes.io/instance") != "erp" or set((peer["podSelector"] or {})) - {"matchLabels"}:
        return None
    return labels.get("app.kubernetes.io/component")


def check_network_policies(report, by_kind, deployments, values, fullname):
    np = values.get("networkPolicy") or {}
    policies = by_kind.get("NetworkPolicy", [])
    release = {"app.kubernetes.io/name": "event-reward-platform", "app.kubernetes.io/instance": "erp"}
    # A default deny of ingress for every pod of the release.
    report.check(any((p["spec"]["podSelector"].get("matchLabels") or {}) == release
                     and "Ingress" in (p["spec"].get("policyTypes") or [])
                     and not p["spec"].get("ingress") for p in policies),
                 "no default-deny ingress NetworkPolicy selects all pods of the release")
    callers = {"auth": {"gateway"}, "event": {"gateway", "auth"}}
    callees = {"gateway": {"auth", "event"}, "auth": {"event"}, "event": set()}
    prometheus_peer = {"namespaceSelector": np["prometheus"]["namespaceSelector"], "podSelector": np["prometheus"]["podSelector"]}
    for service, name, d in rendered_deployments(deployments, fullname):
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        c = pod_spec(d)["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
        main_name = "http" if service == "gateway" else "grpc"
        main = ports.get(main_name)
        peers = ingress_peers(policies, labels, main, main_name)
        if service == "gateway":
            wanted = np.get("gatewayIngressFrom") or None
            report.check(peers == wanted, "%s: HTTP port reachable from %s, expected %s" % (name, peers, wanted or "anyone"))
        elif report.check(peers is not None, "%s: gRPC port %s reachable from anyone" % (name, main)):
            got = [peer_component(p, values) for p in peers]
            report.check(None not in got and set(got) == callers[service],
                         "%s: gRPC port reachable from %s, expected only %s" % (name, peers, sorted(callers[service])))
        admin = ports.get("metrics")
        peers = ingress_peers(policies, labels, admin, "metrics")
        report.check(peers is not None and peers and all(p == prometheus_peer for p in peers),
                     "%s: admin port reachable from %s, expected only Prometheus (%s)" % (name, peers, prometheus_peer))
        # No other port is open.
        own = [p for p in policies if labels_match(p["spec"]["podSelector"].get("matchLabels"), labels)]
        for p in own:
            for rule in p["spec"].get("ingress") or []:
                open_ports = {pp.get("port") for pp in rule.get("ports") or []}
                report.check(open_ports and open_ports <= {main, admin, main_name, "metrics"},
                             "NetworkPolicy/%s: opens %s of %s, beyond its %s and admin ports"
                             % (p["metadata"]["name"], sorted(open_ports, key=str) or "every port", name, main_name))
        # Egress: isolated, each rule on named ports, to the services it calls, the API only if used.
        egress_policies = [p for p in own if "Egress" in (p["spec"].get("policyTypes") or [])]
        if not report.check(egress_policies, "%s: egress is not restricted" % name):
            continue
        rules = [r for p in egress_policies for r in p["spec"].get("egress") or []]
        for r in rules:
            report.check(r.get("ports"), "%s: an egress rule allows every port" % name)
        called = set()
        for r in rules:
            for peer in r.get("to") or []:
                component = peer_component(peer, values)
                if component in SERVICES:
                    called.add(component)
        report.check(called == callees[service], "%s: egress to %s, expected to %s" % (name, sorted(called), sorted(callees[service])))
        dns_port = np["dns"]["port"]
        report.check(any({(pp.get("port"), pp.get("protocol")) for pp in r.get("ports") or []} >= {(dns_port, "UDP"), (dns_port, "TCP")}
                         for r in rules), "%s: no DNS egress" % name)
        api_ports = set(np["kubernetesApi"]["ports"])
        to_api = any({pp.get("port") for pp in r.get("ports") or []} == api_ports for r in rules)
        report.check(to_api == uses_api(values, service), "%s: Kubernetes API egress is %s, expected %s"
                     % (name, to_api, uses_api(values, service)))
        # The delivery webhook: event only, only with a webhook URL, on its ports and peers.
        webhook = webhook_egress(values) if service == "event" else None
        webhook_rules = [r for r in rules if webhook and {pp.get("port") for pp in r.get("ports") or []} == webhook[0]
                         and (r.get("to") or None) == webhook[1]]
        report.check(bool(webhook_rules) == bool(webhook),
                     "%s: delivery webhook egress is %s, expected %s" % (name, bool(webhook_rules), webhook and sorted(webhook[0])))


def check_linkerd(report, by_kind, deployments, values, fullname):
    enabled = ((values.get("mesh") or {}).get("linkerd") or {}).get("enabled")
    linkerd_objs = [o for k in ("Server", "AuthorizationPolicy", "MeshTLSAuthentication") for o in by_kind.get(k, [])]
    for _, name, d in rendered_deployments(deployments, fullname):
        inject = (d["spec"]["template"]["metadata"].get("annotations") or {}).get("linkerd.io/inject")
        report.check((inject == "enabled") == bool(enabled), "%s: linkerd.io/inject is %r with mesh.linkerd.enabled %r"
                     % (name, inject, enabled))
    if not enabled:
        report.check(not linkerd_objs, "Linkerd policy objects rendered although mesh.linkerd.enabled is false")
        return
    servers = by_kind.get("Server", [])
    policies = by_kind.get("AuthorizationPolicy", [])
    authns = {a["metadata"]["name"]: a for a in by_kind.get("MeshTLSAuthentication", [])}
    accounts = {s: pod_spec(deployments["%s-%s" % (fullname, s)]).get("serviceAccountName")
                for s in SERVICES if "%s-%s" % (fullname, s) in deployments}
    callers = {"auth": ["gateway"], "event": ["gateway", "auth"]}
    for service in ("auth", "event"):
        d = deployments.get("%s-%s" % (fullname, service))
        if d is None:
            continue
        labels = d["spec"]["template"]["metadata"].get("labels") or {}
        c = pod_spec(d)["containers"][0]
        grpc = next((p for p in c.get("ports") or [] if p.get("name") == "grpc"), {})
        mine = [s for s in servers if labels_match(s["spec"].get("podSelector", {}).get("matchLabels"), labels)
                and s["spec"].get("port") in (grpc.get("name"), grpc.get("containerPort"))]
        if not report.check(len(mine) == 1, "Linkerd: %d Servers for the gRPC port of %s, expected 1" % (len(mine), service)):
            continue
        server = mine[0]
        report.check(server["spec"].get("accessPolicy") == "deny", "Linkerd Server %s: accessPolicy is not deny" % server["metadata"]["name"])
        targeting = [p for p in policies if p["spec"]["targetRef"].get("kind") == "Server"
                     and p["spec"]["targetRef"].get("group") == "policy.linkerd.io"
                     and p["spec"]["targetRef"].get("name") == server["metadata"]["name"]]
        if not report.check(targeting, "Linkerd: no AuthorizationPolicy for Server %s" % server["metadata"]["name"]):
            continue
        for p in targeting:
            refs = p["spec"].get("requiredAuthenticationRefs") or []
            mesh_refs = [r for r in refs if r.get("kind") == "MeshTLSAuthentication" and r.get("group") == "policy.linkerd.io"]
            report.check(len(refs) == len(mesh_refs) == 1,
                         "Linkerd AuthorizationPolicy %s: requires %s, expected one MeshTLSAuthentication" % (p["metadata"]["name"], refs))
            for r in mesh_refs:
                authn = authns.get(r["name"])
                if not report.check(authn is not None, "Linkerd: MeshTLSAuthentication %s is not rendered" % r["name"]):
                    continue
                ids = authn["spec"].get("identityRefs") or []
                got = sorted((i.get("kind"), i.get("name"), i.get("namespace")) for i in ids)
                want = sorted(("ServiceAccount", accounts.get(s), None) for s in callers[service])
                report.check(got == want and not authn["spec"].get("identities"),
                             "Linkerd: %s may be called by %s, expected exactly the ServiceAccounts of %s %s"
                             % (service, got, callers[service], want))


def check_chart(report, objs, values, production, defaults_only):
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    workloads = [o for o in objs if o["kind"] in WORKLOAD_KINDS]
    deployments = {o["metadata"]["name"]: o for o in by_kind.get("Deployment", [])}
    rendered_names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    fullname = values.get("fullnameOverride") or "erp"

    # References to ConfigMaps and Secrets.
    external_secrets = {values[k].get("existingSecret") for k in ("mongodb", "redis", "jwt", "bootstrapAdmin", "serviceIdentity")
                        if isinstance(values.get(k), dict)} - {None, ""}
    delivery = (values.get("event") or {}).get("delivery") or {}
    if delivery.get("webhookUrl") and delivery.get("existingSecret"):
        external_secrets.add(delivery["existingSecret"])
    tls = values.get("grpcTls") or {}
    if tls.get("enabled") and tls.get("secretName") and not (tls.get("certManager") or {}).get("issuerRef"):
        external_secrets.add(tls["secretName"])
    # Secrets cert-manager makes from the Certificates the chart renders.
    for cert in by_kind.get("Certificate", []):
        rendered_names.add(("Secret", cert["spec"]["secretName"]))
    sa_values = values.get("serviceAccount") or {}
    external_service_accounts = set() if sa_values.get("create", True) else \
        {(sa_values.get(s) or {}).get("name") for s in SERVICES} - {None, ""}
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
            report.check(("ServiceAccount", sa) in rendered_names or sa in external_service_accounts,
                         "%s: ServiceAccount %s is neither rendered nor named in values" % (where, sa))

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
        linkerd = ((values.get("mesh") or {}).get("linkerd") or {}).get("enabled")
        # Under Linkerd auth and event use HTTP /healthz: Linkerd does not authorize the kubelet's
        # gRPC probes on a port with a Server.
        want = "httpGet" if service == "gateway" or linkerd else "grpc"
        for probe_name in ("livenessProbe", "startupProbe"):
            kind, _ = probe_port(c.get(probe_name) or {})
            report.check(kind == want, "%s: %s should be %s" % (name, probe_name, want))
        ready = (c.get("readinessProbe") or {}).get("httpGet") or {}
        report.check(ready.get("path") == "/readyz", "%s: readinessProbe should GET /readyz on the admin port" % name)
        tag = c["image"].rsplit(":", 1)[-1]
        report.check(tag not in ("", "latest"), "%s: image tag %r" % (name, tag))

    # HPAs.
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    for target in hpa_targets:
        d = deployments.get(target)
        if report.check(d is not None, "HPA targets Deployment %s, which is not rendered" % target):
            report.check("replicas" not in d["spec"], "Deployment/%s sets replicas although an HPA scales it" % target)

    check_service_accounts(report, by_kind, deployments, configmaps, values, fullname)
    check_service_identity(report, by_kind, deployments, values, fullname)
    check_grpc_tls(report, by_kind, deployments, configmaps, values, fullname)
    check_linkerd(report, by_kind, deployments, values, fullname)

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
    # Secure by default: the chart's own values.yaml turns NetworkPolicies on, and so a render with
    # nothing but the defaults has them.
    report.check(load_chart_values().get("networkPolicy", {}).get("enabled") is True,
                 "values.yaml: networkPolicy.enabled is not true (NetworkPolicies must be on by default)")
    if defaults_only:
        report.check(np_enabled and policies, "default values: no NetworkPolicy rendered")
    if np_enabled:
        check_network_policies(report, by_kind, deployments, values, fullname)
    else:
        report.check(not policies, "networkPolicy.enabled is false but NetworkPolicies are rendered")

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
        values = load_chart_values()
        for vf in value_files:
            with open(vf, encoding="utf-8") as f:
                values = merge(values, yaml.safe_load(f) or {})
        for o in objs:
            check_containers(report, o)
        check_chart(report, objs, values, production, defaults_only=not value_files)
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
