"""Step 2: every manifest passes kubernetes-validate --strict for one Kubernetes version.

usage: validate_manifests.py KUBE_VERSION FILE...

Custom resources have no built-in schema. Those with a structural schema in crd_schemas.py
(Linkerd's policy objects, cert-manager's Certificate) are validated against it, strictly; the
Prometheus Operator's ServiceMonitor and PrometheusRule are skipped with a note (their specs are
large; promtool checks the rules). Any other kind without a schema, and anything that fails to
validate, fails the step.
"""

import sys
from collections import Counter

import jsonschema
import kubernetes_validate

from common import load_documents, rel
from crd_schemas import SCHEMAS as CRD_SCHEMAS

# Custom resources we render on purpose and do not validate; their CRDs are not part of Kubernetes.
SKIPPED_CUSTOM_KINDS = {
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
    errors, skipped, custom, checked = 0, Counter(), Counter(), 0
    validators = {key: jsonschema.Draft7Validator(schema) for key, schema in CRD_SCHEMAS.items()}
    for path in files:
        for doc in load_documents(path):
            kind, api = doc.get("kind"), doc.get("apiVersion")
            name = (doc.get("metadata") or {}).get("name")
            where = "%s: %s/%s" % (rel(path), kind, name)
            if (api, kind) in SKIPPED_CUSTOM_KINDS:
                skipped[kind] += 1
                continue
            if (api, kind) in validators:
                problems = sorted(validators[(api, kind)].iter_errors(doc), key=lambda e: list(e.path))
                for e in problems:
                    path_in_doc = ".".join(str(p) for p in e.path)
                    print("  FAIL: %s: %s at %s (structural schema of %s)" % (where, e.message, path_in_doc or "(root)", api),
                          file=sys.stderr)
                errors += len(problems)
                custom["%s %s" % (api, kind)] += 1
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
    for kind, count in sorted(custom.items()):
        print("  %d %s object(s) checked against the structural schema of crd_schemas.py" % (count, kind))
    print("  %d objects valid for Kubernetes %s (strict)" % (checked, version))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
