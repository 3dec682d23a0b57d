"""Shared helpers of the deployment checks (run by scripts/check-deploy.sh in .erp/venv-deploy)."""

import os
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def rel(path):
    return os.path.relpath(path, ROOT)


def load_documents(path):
    """Every non-empty YAML document of `path`, as dicts."""
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        if not isinstance(d, dict):
            raise SystemExit("%s: a document is not a mapping: %r" % (rel(path), d))
    return docs


def fail(message):
    print("  FAIL: " + message, file=sys.stderr)


def pod_spec(obj):
    """The pod spec of a workload, or None."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return (spec.get("template") or {}).get("spec")
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    if kind == "Pod":
        return spec
    return None


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
