"""Step 8: evaluate the Tiltfile with stand-ins for Tilt's built-ins, then check what it asked for.

usage: tiltfile_check.py HELM_BINARY KUBE_VERSION

The Tiltfile runs under starlark-pyo3 (Starlark, as Tilt's go.starlark.net, with top-level
statements). The stand-ins record every call; helm() really renders the chart (with the given
helm binary) and kustomize() expands infrastructure/kustomization.yaml (resources and
ConfigMap generators), so the checks afterwards see the objects Tilt would deploy:

* every path the Tiltfile names (build contexts, Dockerfile, chart, values, kustomization, files,
  local_resource scripts) exists;
* each service image is built from the Dockerfile with SERVICE=<service> and used by a container;
* every k8s_resource names a workload that is deployed and depends on known resources;
* port forwards: gateway 8080, Grafana 3000, Prometheus 9090;
* ConfigMaps the observability workloads mount exist (generated or listed), with the keys they pick;
* a manual local_resource runs ./scripts/test.sh.
"""

import os
import shlex
import subprocess
import sys

import starlark as sl
import yaml

from common import ROOT, WORKLOAD_KINDS, pod_spec

TILTFILE = os.path.join(ROOT, "Tiltfile")


class Tilt:
    def __init__(self, helm_bin, kube_version):
        self.helm_bin = helm_bin
        self.kube_version = kube_version
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
        return {}

    def docker_build(self, ref, context, build_args=None, dockerfile="Dockerfile", only=None, ignore=None, **kwargs):
        self.need("docker_build context", context)
        self.need("Dockerfile", dockerfile)
        for p in only or []:
            self.need("docker_build only", os.path.join(context, p))
        self.images.append({"ref": ref, "build_args": dict(build_args or {}), "dockerfile": dockerfile})

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
        self.problem("the Tiltfile runs local(%r) at load time; keep loading side-effect free" % (command,))
        return ""

    def helm(self, chart, name=None, namespace=None, values=None, set=None, **kwargs):
        self.need("helm chart", chart)
        values = [values] if isinstance(values, str) else list(values or [])
        cmd = [self.helm_bin, "template", name or "chart", os.path.join(ROOT, chart),
               "--kube-version", self.kube_version]
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
        self.local_resources.append({"name": name, "cmd": cmd, "trigger_mode": trigger_mode,
                                     "auto_init": auto_init, "resource_deps": list(resource_deps or [])})
        if cmd:
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

    # Images.
    for service in ("gateway", "auth", "event"):
        ref = "erp-" + service
        builds = [i for i in tilt.images if i["ref"] == ref]
        if not builds:
            tilt.problem("no docker_build for %s" % ref)
            continue
        b = builds[0]
        if b["build_args"].get("SERVICE") != service:
            tilt.problem("docker_build(%r) passes SERVICE=%r" % (ref, b["build_args"].get("SERVICE")))
        if os.path.normpath(b["dockerfile"]) != "Dockerfile":
            tilt.problem("docker_build(%r) uses %r instead of the Dockerfile" % (ref, b["dockerfile"]))
    for i in tilt.images:
        if i["ref"] not in container_images:
            tilt.problem("image %r is built but no deployed container uses it (containers use %s)"
                         % (i["ref"], sorted(container_images)))

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
    for local, workload in ((8080, "erp-gateway"), (3000, "grafana"), (9090, "prometheus")):
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

    tests = [lr for lr in tilt.local_resources if shlex.split(lr["cmd"] or "x")[0] == "./scripts/test.sh"]
    if not tests:
        tilt.problem("no local_resource runs ./scripts/test.sh")
    elif tests[0]["trigger_mode"] != "TRIGGER_MODE_MANUAL":
        tilt.problem("the tests local_resource is not trigger_mode=TRIGGER_MODE_MANUAL")


def main():
    helm_bin, kube_version = sys.argv[1], sys.argv[2]
    tilt = Tilt(helm_bin, kube_version)
    try:
        evaluate(tilt)
    except (sl.StarlarkError, RuntimeError) as e:
        print("  FAIL: the Tiltfile does not evaluate:\n%s" % e, file=sys.stderr)
        sys.exit(1)
    check(tilt)
    for p in tilt.problems:
        print("  FAIL: Tiltfile: %s" % p, file=sys.stderr)
    if tilt.problems:
        sys.exit(1)
    print("  Tiltfile: %d images, %d objects, %d resources, %d local resources, %d paths checked"
          % (len(tilt.images), len(tilt.objects), len(tilt.resources), len(tilt.local_resources), len(tilt.paths)))


if __name__ == "__main__":
    main()
