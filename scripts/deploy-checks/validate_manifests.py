"""Step 2: every manifest passes kubernetes-validate --strict for one Kubernetes version.

usage: validate_manifests.py KUBE_VERSION FILE...

Kinds without a built-in schema (CRDs such as ServiceMonitor and PrometheusRule) are skipped with
a note; anything else that fails to validate fails the step.
"""

import sys
from collections import Counter

import kubernetes_validate

from common import load_documents, rel

# Custom resources we render on purpose; their CRDs are not part of Kubernetes.
KNOWN_CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def main():
    version, files = sys.argv[1], sys.argv[2:]
    supported = kubernetes_validate.utils.all_versions()
    minor = kubernetes_validate.utils.major_minor
    if minor(version) not in {minor(v) for v in supported}:
        sys.exit("kubernetes-validate %s does not know Kubernetes %s (it knows %s .. %s)"
                 % (kubernetes_validate.__version__, version, supported[0], supported[-1]))
    errors, skipped, checked = 0, Counter(), 0
    for path in files:
        for doc in load_documents(path):
            kind, api = doc.get("kind"), doc.get("apiVersion")
            name = (doc.get("metadata") or {}).get("name")
            where = "%s: %s/%s" % (rel(path), kind, name)
            if (api, kind) in KNOWN_CUSTOM_KINDS:
                skipped[kind] += 1
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as e:
                errors += 1
                path_in_doc = ".".join(str(p) for p in e.path)
                print("  FAIL: %s: %s at %s" % (where, e.message, path_in_doc or "(root)"), file=sys.stderr)
            except kubernetes_validate.SchemaNotFoundError as e:
                errors += 1
                print("  FAIL: %s: %s" % (where, e.message), file=sys.stderr)
    for kind, count in sorted(skipped.items()):
        print("  note: skipped %d %s object(s): a custom resource (Prometheus Operator CRD), no built-in schema" % (count, kind))
    print("  %d objects valid for Kubernetes %s (strict)" % (checked, version))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
