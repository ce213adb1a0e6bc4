#!/usr/bin/env python3
"""Validates custom resources against the openAPIV3Schema of their CRD.

kubernetes-validate only knows the built-in kinds, so it can only warn about a
CacheCluster. This checks each document of the given manifests against the CRD's
schema the way the API server's strict field validation would: Kubernetes' schema
extensions are translated to JSON Schema (`nullable`, `x-kubernetes-int-or-string`,
`x-kubernetes-preserve-unknown-fields`) and unknown fields are errors. The CEL rules
(`x-kubernetes-validations`) are not evaluated here; the Rust tests of kcache-crd
evaluate them on the same examples.

    validate-custom-resources.py CRD.yaml MANIFEST.yaml...
"""

import copy
import re
import sys

import jsonschema
import yaml

# metadata.name of a namespaced object: a DNS subdomain.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def to_json_schema(node):
    """A JSON Schema (2020-12) equivalent of a structural Kubernetes schema node."""
    node = copy.copy(node)
    for key in ("properties",):
        if key in node:
            node[key] = {k: to_json_schema(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = to_json_schema(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            node[key] = [to_json_schema(v) for v in node[key]]
    if node.pop("x-kubernetes-int-or-string", False):
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    if node.get("type") == "object" and "properties" in node and not preserve:
        node.setdefault("additionalProperties", False)
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    return node


def describe(error):
    """The error at its path; for a nullable field, the reason the non-null branch failed."""
    causes = [c for c in error.context or [] if c.validator_value != "null"]
    if causes:
        error = causes[0]
    return f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"


def validators(crd):
    """One validator per served version, keyed by apiVersion."""
    group = crd["spec"]["group"]
    out = {}
    for version in crd["spec"]["versions"]:
        schema = to_json_schema(version["schema"]["openAPIV3Schema"])
        # The API server handles these three itself; the CRD schema omits them.
        schema["properties"].update(
            apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"}
        )
        out[f"{group}/{version['name']}"] = jsonschema.Draft202012Validator(schema)
    return out


def main(crd_path, manifests):
    with open(crd_path) as f:
        crd = yaml.safe_load(f)
    kind = crd["spec"]["names"]["kind"]
    by_version = validators(crd)
    failures = checked = 0
    for path in manifests:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        for doc in documents:
            if doc.get("kind") != kind:
                continue
            name = (doc.get("metadata") or {}).get("name", "")
            where = f"{path}: {kind.lower()}/{name or '?'}"
            errors = []
            validator = by_version.get(doc.get("apiVersion"))
            if validator is None:
                errors.append(f"apiVersion {doc.get('apiVersion')} is not served by the CRD")
            else:
                errors += [describe(e) for e in validator.iter_errors(doc)]
            if not NAME.match(name) or len(name) > 253:
                errors.append(f"metadata.name {name!r} is not a valid name")
            checked += 1
            if errors:
                failures += 1
                for error in errors:
                    print(f"ERROR {where}: {error}")
            else:
                print(f"INFO {where} passed against the {kind} CRD schema")
    if checked == 0:
        print(f"ERROR no {kind} found in {', '.join(manifests)}")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
