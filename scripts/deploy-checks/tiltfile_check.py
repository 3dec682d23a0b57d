"""Step 8: evaluate the Tiltfile with stand-ins for Tilt's built-ins, then check what it asked for.

usage: tiltfile_check.py HELM_BINARY

The Tiltfile runs under starlark-pyo3 (Starlark, as Tilt's go.starlark.net, with top-level
statements). The stand-ins record every call; helm() really renders the chart (with the given
helm binary) and kustomize() expands infrastructure/kustomization.yaml (resources and
ConfigMap generators), so the checks afterwards see the objects Tilt would deploy:

It is evaluated three times: with no options (host build, observability stack), with
--no-observability and with --image-build=docker. Then:

* helm() is given kube_version (the check passes no --kube-version of its own, so a Tiltfile
  without it fails here as it would with a helm whose default is older than Chart.yaml allows),
  and that version satisfies Chart.yaml's kubeVersion;
* every path the Tiltfile names (build contexts, Dockerfiles, chart, values, kustomization, files,
  local_resource scripts) exists, except the host build's contexts, which its local_resource makes;
* host build (the default): a local_resource runs `cargo build` (dev profile, no --release) of the
  three binaries and writes each to .erp/tilt/<service>/erp-service; each image is built from
  Dockerfile.dev (no compiler, one COPY of that binary, same user and entrypoint as the release
  Dockerfile) in that context with SERVICE=<service>; the three workloads wait for the binaries;
* docker build: each image from the Dockerfile with SERVICE=<service>;
* each image is used by a deployed container;
* --no-observability: no observability workload, no dependency on one, and the services' ConfigMaps
  carry no OTEL_EXPORTER_OTLP_ENDPOINT (export off); with the stack, the endpoint names the
  collector Service the stack deploys, on a port it serves;
* every k8s_resource names a workload that is deployed and depends on known resources;
* port forwards: gateway 8080, and with the stack Grafana 3000, Prometheus 9090;
* ConfigMaps the observability workloads mount exist (generated or listed), with the keys they pick;
* a manual local_resource runs ./scripts/test.sh.
"""

import os
import re
import shlex
import subprocess
import sys
import urllib.parse

import starlark as sl
import yaml

from common import ROOT, WORKLOAD_KINDS, pod_spec

TILTFILE = os.path.join(ROOT, "Tiltfile")


class Tilt:
    def __init__(self, helm_bin, options):
        self.helm_bin = helm_bin
        self.options = dict(options)
        self.helm_calls = []
        self.made_dirs = []  # directories local("mkdir -p ...") creates at load time
        self.problems = []
        self.paths = []  # (what, path) pairs that must exist
        self.images = []  # docker_build calls
        self.objects = []  # every object given to k8s_yaml
        self.resources = []  # k8s_resource calls
        self.local_resources = []
        self.config_defs = {}
        self.generated = {}  # (namespace, name) -> keys of kustomize-generated ConfigMaps

    def problem(self, message):
        self.problems.append(message)

    def need(self, what, path):
        self.paths.append((what, path))
        return os.path.join(ROOT, path)

    # --- built-ins ------------------------------------------------------------------------------
    def version_settings(self, constraint=None, check_updates=True):
        return None

    def allow_k8s_contexts(self, contexts):
        return None

    def update_settings(self, **kwargs):
        return None

    def define(self, kind):
        def f(name, args=False, usage=""):
            self.config_defs[name] = kind
        return f

    def config_parse(self):
        for name in self.options:
            if name not in self.config_defs:
                self.problem("the check sets --%s, which the Tiltfile does not define" % name)
        return dict(self.options)

    def docker_build(self, ref, context, build_args=None, dockerfile="Dockerfile", only=None, ignore=None, **kwargs):
        self.need("Dockerfile", dockerfile)
        # A build context under .erp/tilt/ is made at run time by the host build's local_resource
        # (checked in check()); any other must exist.
        generated = os.path.normpath(context).startswith(os.path.join(".erp", "tilt"))
        if not generated:
            self.need("docker_build context", context)
            for p in only or []:
                self.need("docker_build only", os.path.join(context, p))
        self.images.append({"ref": ref, "context": os.path.normpath(context), "build_args": dict(build_args or {}),
                            "dockerfile": dockerfile, "only": list(only or []), "generated": generated})

    def blob(self, text):
        return {"__blob__": text}

    def read_file(self, path, default=None):
        full = self.need("read_file", path)
        with open(full, encoding="utf-8") as f:
            return f.read()

    def read_yaml(self, path, default=None):
        return yaml.safe_load(self.read_file(path))

    def watch_file(self, path):
        self.need("watch_file", path)

    def local(self, command, quiet=False, **kwargs):
        # Loading stays side-effect free but for creating the host build's contexts.
        words = command.split() if isinstance(command, str) else list(command)
        if words[:2] == ["mkdir", "-p"] and words[2:] and all(w.startswith(".erp/tilt/") for w in words[2:]):
            self.made_dirs += [os.path.normpath(w) for w in words[2:]]
            return ""
        self.problem("the Tiltfile runs local(%r) at load time; keep loading side-effect free" % (command,))
        return ""

    def helm(self, chart, name=None, namespace=None, values=None, set=None, kube_version=None, **kwargs):
        self.need("helm chart", chart)
        self.helm_calls.append({"chart": chart, "kube_version": kube_version})
        values = [values] if isinstance(values, str) else list(values or [])
        # Only the Tiltfile's own kube_version: without one, helm falls back to its default, which
        # may be older than Chart.yaml's kubeVersion (then helm refuses the chart).
        cmd = [self.helm_bin, "template", name or "chart", os.path.join(ROOT, chart)]
        if kube_version:
            cmd += ["--kube-version", kube_version]
        else:
            self.problem("helm(%r) has no kube_version: helm would use its default Kubernetes version" % chart)
        if namespace:
            cmd += ["--namespace", namespace]
        for v in values:
            cmd += ["--values", self.need("helm values", v)]
        for s in ([set] if isinstance(set, str) else list(set or [])):
            cmd += ["--set", s]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            self.problem("helm(%r) does not render: %s" % (chart, done.stderr.strip()))
            return {"__blob__": ""}
        return {"__blob__": done.stdout}

    def kustomize(self, path, kustomize_bin=None, flags=None):
        base = self.need("kustomize path", path)
        kfile = os.path.join(base, "kustomization.yaml")
        self.need("kustomization", os.path.join(path, "kustomization.yaml"))
        if not os.path.exists(kfile):
            return {"__blob__": ""}
        with open(kfile, encoding="utf-8") as f:
            k = yaml.safe_load(f)
        docs = []
        for r in k.get("resources") or []:
            full = self.need("kustomize resource", os.path.join(path, r))
            if os.path.exists(full):
                with open(full, encoding="utf-8") as f:
                    docs += [d for d in yaml.safe_load_all(f) if d]
        for g in k.get("configMapGenerator") or []:
            keys = set()
            for spec in g.get("files") or []:
                key, _, file = spec.partition("=") if "=" in spec else (os.path.basename(spec), "", spec)
                self.need("configMapGenerator file", os.path.join(path, file))
                keys.add(key)
            for lit in g.get("literals") or []:
                keys.add(lit.split("=", 1)[0])
            ns = g.get("namespace", "default")
            self.generated[(ns, g["name"])] = keys
            docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": g["name"], "namespace": ns}, "data": {key: "" for key in keys}})
        return {"__blob__": yaml.safe_dump_all(docs)}

    def k8s_yaml(self, yaml_arg, allow_duplicates=False):
        items = yaml_arg if isinstance(yaml_arg, list) else [yaml_arg]
        for item in items:
            if isinstance(item, dict) and "__blob__" in item:
                text = item["__blob__"]
            else:
                with open(self.need("k8s_yaml", item), encoding="utf-8") as f:
                    text = f.read()
            self.objects += [d for d in yaml.safe_load_all(text) if d]

    def port_forward(self, local_port, container_port=None, name=None, link_path=None, host=None):
        return {"local": local_port, "container": container_port or local_port, "name": name}

    def link(self, url, name=None):
        return {"url": url, "name": name}

    def k8s_resource(self, workload="", new_name="", port_forwards=None, resource_deps=None, objects=None,
                     labels=None, links=None, trigger_mode=None, auto_init=True, **kwargs):
        if isinstance(port_forwards, (int, str, dict)):
            port_forwards = [port_forwards]
        self.resources.append({"workload": workload, "new_name": new_name, "port_forwards": port_forwards or [],
                               "resource_deps": list(resource_deps or []), "objects": list(objects or [])})

    def local_resource(self, name, cmd="", deps=None, trigger_mode=None, auto_init=True, resource_deps=None,
                       serve_cmd="", labels=None, **kwargs):
        deps = [deps] if isinstance(deps, str) else list(deps or [])
        for d in deps:
            self.need("local_resource deps", d)
        self.local_resources.append({"name": name, "cmd": cmd, "trigger_mode": trigger_mode, "deps": deps,
                                     "auto_init": auto_init, "resource_deps": list(resource_deps or [])})
        if cmd and "\n" not in cmd.strip():
            first = shlex.split(cmd)[0]
            if first.startswith("./") or "/" in first:
                self.need("local_resource command", first)

    def include(self, path):
        self.problem("include(%r): the check does not follow includes" % path)

    def fail(self, message):
        raise RuntimeError("Tiltfile called fail(%r)" % message)


def evaluate(tilt):
    glb = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print,
                                  sl.LibraryExtension.Json, sl.LibraryExtension.Map,
                                  sl.LibraryExtension.Filter])
    module = sl.Module()
    for name in ("version_settings", "allow_k8s_contexts", "update_settings", "docker_build", "blob",
                 "read_file", "read_yaml", "watch_file", "local", "helm", "kustomize", "k8s_yaml",
                 "port_forward", "link", "k8s_resource", "local_resource", "include", "fail"):
        module.add_callable(name, getattr(tilt, name))
    module.add_callable("_define_string", tilt.define("string"))
    module.add_callable("_define_bool", tilt.define("bool"))
    module.add_callable("_define_string_list", tilt.define("string_list"))
    module.add_callable("_config_parse", tilt.config_parse)
    module["TRIGGER_MODE_MANUAL"] = "TRIGGER_MODE_MANUAL"
    module["TRIGGER_MODE_AUTO"] = "TRIGGER_MODE_AUTO"
    prelude = ("config = struct(define_string = _define_string, define_bool = _define_bool, "
               "define_string_list = _define_string_list, parse = _config_parse)\n")
    dialect = sl.Dialect.extended()
    sl.eval(module, sl.parse("<tilt stand-ins>", prelude, dialect), glb)

    def no_load(module_id):
        raise RuntimeError("load(%r): the Tiltfile must not load extensions (they are downloaded)" % module_id)

    with open(TILTFILE, encoding="utf-8") as f:
        source = f.read()
    sl.eval(module, sl.parse("Tiltfile", source, dialect), glb, sl.FileLoader(no_load))


OBSERVABILITY_WORKLOADS = {"prometheus", "grafana", "loki", "alloy", "tempo", "otel-collector"}


def version_tuple(text):
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    return tuple(int(x or 0) for x in m.groups()) if m else None


def check_helm_kube_version(tilt):
    """helm() gets kube_version, and it satisfies Chart.yaml's kubeVersion (a `>=X.Y` bound)."""
    for call in tilt.helm_calls:
        with open(os.path.join(ROOT, call["chart"], "Chart.yaml"), encoding="utf-8") as f:
            constraint = str(yaml.safe_load(f).get("kubeVersion") or "")
        given = call["kube_version"]
        if not given:
            continue  # reported by the helm() stand-in
        m = re.fullmatch(r"\s*>=\s*(\S+?)(?:-0)?\s*", constraint)
        if not m:
            tilt.problem("Chart.yaml kubeVersion %r: this check understands only '>=X.Y[.Z][-0]'" % constraint)
            continue
        if version_tuple(given) is None or version_tuple(given) < version_tuple(m.group(1)):
            tilt.problem("helm(kube_version=%r) does not satisfy Chart.yaml's kubeVersion %r" % (given, constraint))


def dockerfile_instructions(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = re.sub(r"\\\n", " ", f.read())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def check_images(tilt, workloads, container_images):
    for service in ("gateway", "auth", "event"):
        ref = "erp-" + service
        builds = [i for i in tilt.images if i["ref"] == ref]
        if not builds:
            tilt.problem("no docker_build for %s" % ref)
            continue
        b = builds[0]
        if b["build_args"].get("SERVICE") != service:
            tilt.problem("docker_build(%r) passes SERVICE=%r" % (ref, b["build_args"].get("SERVICE")))
        if tilt.image_build == "docker":
            if os.path.normpath(b["dockerfile"]) != "Dockerfile":
                tilt.problem("--image-build=docker: docker_build(%r) uses %r instead of the Dockerfile" % (ref, b["dockerfile"]))
            continue
        # The host build: a thin image around the binary a local_resource builds with cargo.
        if os.path.normpath(b["dockerfile"]) != "Dockerfile.dev":
            tilt.problem("host build: docker_build(%r) uses %r instead of Dockerfile.dev" % (ref, b["dockerfile"]))
        context = os.path.join(".erp", "tilt", service)
        if context not in tilt.made_dirs:
            tilt.problem("host build: the context %s is not created when the Tiltfile loads (Tilt then skips its file "
                         "watch and `only`)" % context)
        if b["context"] != context or b["only"] != ["erp-service"]:
            tilt.problem("host build: docker_build(%r) context %r only %r, expected %r only ['erp-service']"
                         % (ref, b["context"], b["only"], context))
        builders = [lr for lr in tilt.local_resources if "cargo build" in (lr["cmd"] or "")]
        if len(builders) != 1:
            tilt.problem("host build: %d local_resources run `cargo build`, expected one" % len(builders))
            continue
        lr = builders[0]
        cmd = lr["cmd"]
        if "--release" in cmd or "--profile" in cmd:
            tilt.problem("host build: %r builds another profile than dev: %s" % (lr["name"], cmd.splitlines()[0]))
        if ("erp-" + service) not in cmd or ".erp/tilt/" not in cmd or "erp-service" not in cmd:
            tilt.problem("host build: %r does not build erp-%s into .erp/tilt/%s/erp-service" % (lr["name"], service, service))
        for src in ("crates", "proto", "Cargo.toml", "Cargo.lock"):
            if src not in lr["deps"]:
                tilt.problem("host build: %r does not watch %s" % (lr["name"], src))
        deps = next((r["resource_deps"] for r in tilt.resources if r["workload"] == ref), [])
        if lr["name"] not in deps:
            tilt.problem("host build: k8s_resource(%r) does not wait for %r (its image's binary)" % (ref, lr["name"]))
    for i in tilt.images:
        if i["ref"] not in container_images:
            tilt.problem("image %r is built but no deployed container uses it (containers use %s)"
                         % (i["ref"], sorted(container_images)))
    if tilt.image_build == "host":
        dev = dockerfile_instructions("Dockerfile.dev")
        release = dockerfile_instructions("Dockerfile")
        if any(line.split()[0].upper() == "RUN" for line in dev) or len([l for l in dev if l.upper().startswith("FROM")]) != 1:
            tilt.problem("Dockerfile.dev is not a thin image: one FROM, no RUN (it only copies the host's binary)")
        if "COPY erp-service /usr/local/bin/erp-service" not in dev:
            tilt.problem("Dockerfile.dev does not COPY erp-service to /usr/local/bin/erp-service")
        for keyword in ("USER", "ENTRYPOINT"):
            want = [l for l in release if l.split()[0].upper() == keyword]
            got = [l for l in dev if l.split()[0].upper() == keyword]
            if want != got:
                tilt.problem("Dockerfile.dev %s %s differs from the release Dockerfile's %s" % (keyword, got, want))


def check_telemetry(tilt, workloads):
    """Traces go to the stack's collector when it is deployed, and nowhere without it."""
    configmaps = {(o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o for o in tilt.objects
                  if o.get("kind") == "ConfigMap"}
    services = {(o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o for o in tilt.objects
                if o.get("kind") == "Service"}
    endpoints = {}
    for (ns, name), cm in configmaps.items():
        if name in ("erp-gateway", "erp-auth", "erp-event"):
            endpoints[name] = (cm.get("data") or {}).get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if len(endpoints) != 3:
        tilt.problem("the services' ConfigMaps are not all deployed: %s" % sorted(endpoints))
    deployed = OBSERVABILITY_WORKLOADS & set(workloads)
    if not tilt.observability:
        if deployed:
            tilt.problem("--no-observability still deploys %s" % sorted(deployed))
        for name, endpoint in sorted(endpoints.items()):
            if endpoint.strip():
                tilt.problem("--no-observability: %s still exports traces to %s, which is not deployed" % (name, endpoint))
        for r in tilt.resources:
            bad = OBSERVABILITY_WORKLOADS & set(r["resource_deps"])
            if bad:
                tilt.problem("--no-observability: %s waits for %s" % (r["workload"], sorted(bad)))
        return
    for name, endpoint in sorted(endpoints.items()):
        url = urllib.parse.urlparse(endpoint)
        host = (url.hostname or "").split(".")
        port = url.port
        namespace = host[1] if len(host) > 1 else tilt.namespace
        svc = services.get((namespace, host[0]))
        if not endpoint or svc is None:
            tilt.problem("%s exports traces to %r, but the stack deploys no such Service" % (name, endpoint))
            continue
        if port not in {p.get("port") for p in svc["spec"].get("ports") or []}:
            tilt.problem("%s exports traces to %r: Service %s/%s has no port %s" % (name, endpoint, namespace, host[0], port))



def check(tilt):
    for what, path in tilt.paths:
        if not os.path.exists(os.path.join(ROOT, path)):
            tilt.problem("%s %r does not exist" % (what, path))

    workloads = {}
    container_images = set()
    for o in tilt.objects:
        if o.get("kind") in WORKLOAD_KINDS:
            workloads[o["metadata"]["name"]] = o
            spec = pod_spec(o) or {}
            for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
                container_images.add(c["image"].rsplit("@", 1)[0].rsplit(":", 1)[0]
                                     if ":" in c["image"].rsplit("/", 1)[-1] else c["image"])

    check_helm_kube_version(tilt)
    check_images(tilt, workloads, container_images)
    check_telemetry(tilt, workloads)

    # Resources.
    names = set()
    for r in tilt.resources:
        if r["workload"]:
            if r["workload"] not in workloads:
                tilt.problem("k8s_resource(%r): no such workload (have %s)" % (r["workload"], sorted(workloads)))
            names.add(r["new_name"] or r["workload"])
        elif r["new_name"]:
            names.add(r["new_name"])
    names |= set(workloads) | {lr["name"] for lr in tilt.local_resources}
    # Tilt's catch-all resource for objects that are not workloads (namespaces, ConfigMaps, ...).
    if any(o.get("kind") not in WORKLOAD_KINDS for o in tilt.objects):
        names.add("uncategorized")
    # Object selectors (name[:kind[:namespace]]) must each pick an object.
    for r in tilt.resources:
        for selector in r["objects"]:
            parts = selector.lower().split(":")
            hits = [o for o in tilt.objects
                    if o["metadata"]["name"].lower() == parts[0]
                    and (len(parts) < 2 or o["kind"].lower() == parts[1])
                    and (len(parts) < 3 or o["metadata"].get("namespace", "default").lower() == parts[2])]
            if not hits:
                tilt.problem("k8s_resource(%r) objects: %r selects nothing" % (r["new_name"] or r["workload"], selector))
    for r in tilt.resources + tilt.local_resources:
        for dep in r["resource_deps"]:
            if dep not in names:
                tilt.problem("resource %r depends on unknown resource %r" % (r.get("workload") or r.get("name"), dep))

    forwards = {}
    for r in tilt.resources:
        for pf in r["port_forwards"]:
            if isinstance(pf, int):
                local, container = pf, pf
            elif isinstance(pf, str):
                parts = pf.split(":")
                local, container = int(parts[-2] if len(parts) > 1 else parts[-1]), int(parts[-1])
            else:
                local, container = pf["local"], pf["container"]
            forwards[local] = (r["workload"], container)
    wanted = [(8080, "erp-gateway")]
    if tilt.observability:
        wanted += [(3000, "grafana"), (9090, "prometheus")]
    for local, workload in wanted:
        got = forwards.get(local)
        if not got or got[0] != workload:
            tilt.problem("no port forward %d -> %s (have %s)" % (local, workload, forwards))
            continue
        # The forwarded port is one the workload's container declares.
        declared = {p.get("containerPort") for c in (pod_spec(workloads.get(workload, {})) or {}).get("containers", [])
                    for p in c.get("ports") or []}
        if got[1] not in declared:
            tilt.problem("port forward %d -> %s:%d, but the container declares %s" % (local, workload, got[1], sorted(declared)))

    # Mounted ConfigMaps of the kustomized stack exist with the keys they pick.
    listed = {(o["metadata"].get("namespace", "default"), o["metadata"]["name"]) for o in tilt.objects
              if o.get("kind") == "ConfigMap"}
    for name, w in workloads.items():
        ns = w["metadata"].get("namespace", "default")
        for v in (pod_spec(w) or {}).get("volumes") or []:
            cm = v.get("configMap")
            if not cm:
                continue
            if (ns, cm["name"]) not in listed:
                tilt.problem("%s mounts ConfigMap %s/%s, which nothing creates" % (name, ns, cm["name"]))
            keys = tilt.generated.get((ns, cm["name"]))
            for item in cm.get("items") or []:
                if keys is not None and item["key"] not in keys:
                    tilt.problem("%s picks key %r of ConfigMap %s, which has %s" % (name, item["key"], cm["name"], sorted(keys)))

    tests = [lr for lr in tilt.local_resources if (lr["cmd"] or "x").split()[0] == "./scripts/test.sh"]
    if not tests:
        tilt.problem("no local_resource runs ./scripts/test.sh")
    elif tests[0]["trigger_mode"] != "TRIGGER_MODE_MANUAL":
        tilt.problem("the tests local_resource is not trigger_mode=TRIGGER_MODE_MANUAL")


# Option sets the Tiltfile is evaluated with (`tilt up -- <options>`), and what they mean here.
OPTION_SETS = [
    ("default", {}),
    ("--no-observability", {"no-observability": True}),
    ("--image-build=docker", {"image-build": "docker"}),
]


def main():
    helm_bin = sys.argv[1]
    failed = False
    for label, options in OPTION_SETS:
        tilt = Tilt(helm_bin, options)
        tilt.observability = not options.get("no-observability", False)
        tilt.image_build = options.get("image-build", "host")
        tilt.namespace = "erp"
        try:
            evaluate(tilt)
        except (sl.StarlarkError, RuntimeError) as e:
            print("  FAIL: the Tiltfile does not evaluate (%s):\n%s" % (label, e), file=sys.stderr)
            failed = True
            continue
        check(tilt)
        for p in tilt.problems:
            print("  FAIL: Tiltfile (%s): %s" % (label, p), file=sys.stderr)
        if tilt.problems:
            failed = True
            continue
        print("  Tiltfile %s: %d images (%s), %d objects, %d resources, %d local resources, %d paths checked"
              % (label, len(tilt.images), sorted({i["dockerfile"] for i in tilt.images})[0], len(tilt.objects),
                 len(tilt.resources), len(tilt.local_resources), len(tilt.paths)))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
