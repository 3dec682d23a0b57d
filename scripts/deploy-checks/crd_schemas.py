"""Structural schemas of the custom resources the chart renders whose CRDs kubernetes-validate
does not know (step 2).

kubernetes-validate only has the built-in Kubernetes kinds. Rather than skipping custom resources
unseen, each kind the chart renders on purpose is listed here with a JSON schema (draft-07) written
from its CRD's documented API: the required fields, the allowed values, and — like `--strict` for
built-in kinds — no unknown fields, since an API server with the CRD would prune a misspelt field
silently. Versions checked against:

* policy.linkerd.io (Linkerd 2.15+): Server v1beta3, AuthorizationPolicy v1alpha1,
  MeshTLSAuthentication v1alpha1;
* cert-manager.io/v1 Certificate (cert-manager 1.x), the fields the chart uses.

A custom kind neither here nor in validate_manifests.SKIPPED_CUSTOM_KINDS fails validation.
"""

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
API_GROUP = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KIND = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS_LABEL},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "additionalProperties": False,
}

LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}

# A reference to another object (Linkerd's variant of the Gateway API's reference).
def _ref(required):
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": {
            "group": {"type": "string", "maxLength": 253, "pattern": API_GROUP},
            "kind": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": KIND},
            "name": {"type": "string", "minLength": 1, "maxLength": 253},
            "namespace": {"type": "string", "maxLength": 253},
        },
    }


def _object(api_version, kind, spec):
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


LINKERD_SERVER = _object("policy.linkerd.io/v1beta3", "Server", {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    # Exactly one of the two selectors.
    "oneOf": [{"required": ["podSelector"]}, {"required": ["externalWorkloadSelector"]}],
    "properties": {
        "podSelector": LABEL_SELECTOR,
        "externalWorkloadSelector": LABEL_SELECTOR,
        # A port name (IANA_SVC_NAME) or number.
        "port": {"anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 65535},
            {"type": "string", "maxLength": 15, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        ]},
        "proxyProtocol": {"enum": ["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"]},
        "accessPolicy": {"enum": ["deny", "all-authenticated", "all-unauthenticated",
                                  "cluster-authenticated", "cluster-unauthenticated", "audit"]},
    },
})

LINKERD_AUTHORIZATION_POLICY = _object("policy.linkerd.io/v1alpha1", "AuthorizationPolicy", {
    "type": "object",
    "additionalProperties": False,
    "required": ["targetRef", "requiredAuthenticationRefs"],
    "properties": {
        "targetRef": _ref(["kind", "name"]),
        "requiredAuthenticationRefs": {"type": "array", "items": _ref(["kind", "name"])},
    },
})

LINKERD_MESH_TLS_AUTHENTICATION = _object("policy.linkerd.io/v1alpha1", "MeshTLSAuthentication", {
    "type": "object",
    "additionalProperties": False,
    "oneOf": [{"required": ["identities"]}, {"required": ["identityRefs"]}],
    "properties": {
        "identities": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string",
                      "pattern": r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
        },
        "identityRefs": {"type": "array", "minItems": 1, "items": _ref(["kind"])},
    },
})

DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$"}

CERT_MANAGER_CERTIFICATE = _object("cert-manager.io/v1", "Certificate", {
    "type": "object",
    "additionalProperties": False,
    "required": ["secretName", "issuerRef"],
    "anyOf": [{"required": ["commonName"]}, {"required": ["dnsNames"]}, {"required": ["ipAddresses"]},
              {"required": ["uris"]}, {"required": ["emailAddresses"]}],
    "properties": {
        "secretName": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "commonName": {"type": "string", "maxLength": 64},
        "dnsNames": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "ipAddresses": {"type": "array", "items": {"type": "string"}},
        "uris": {"type": "array", "items": {"type": "string"}},
        "emailAddresses": {"type": "array", "items": {"type": "string"}},
        "duration": DURATION,
        "renewBefore": DURATION,
        "isCA": {"type": "boolean"},
        "usages": {"type": "array", "items": {"enum": [
            "signing", "digital signature", "content commitment", "key encipherment",
            "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
            "decipher only", "any", "server auth", "client auth", "code signing",
            "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
            "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
        "privateKey": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "size": {"type": "integer", "minimum": 1},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]},
            },
        },
        "issuerRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "kind": {"type": "string"},
                "group": {"type": "string"},
            },
        },
    },
})

SCHEMAS = {
    ("policy.linkerd.io/v1beta3", "Server"): LINKERD_SERVER,
    ("policy.linkerd.io/v1alpha1", "AuthorizationPolicy"): LINKERD_AUTHORIZATION_POLICY,
    ("policy.linkerd.io/v1alpha1", "MeshTLSAuthentication"): LINKERD_MESH_TLS_AUTHENTICATION,
    ("cert-manager.io/v1", "Certificate"): CERT_MANAGER_CERTIFICATE,
}
