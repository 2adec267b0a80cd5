#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests against the Kubernetes API schemas, strictly.

Usage: validate_manifests.py --kubernetes-version 1.30 [--kubernetes-version 1.37 ...] FILE...

Each FILE is a multi-document YAML stream, as `kubectl kustomize` prints it. Every object is
checked with kubernetes-validate in strict mode (an unknown or misspelt field is an error) for
every Kubernetes version given. A kind for which kubernetes-validate has no schema is an error,
never a warning: the only exceptions are the custom resources listed in CUSTOM_SCHEMAS, which
are checked against the JSON schemas in tests/fixtures/schemas/ instead, and the output says
so for each of them.

Exit status: 0 when every object passed, 1 otherwise (2 for bad usage or unreadable input).
"""

import argparse
import json
import pathlib
import sys

try:
    import jsonschema
    import kubernetes_validate
    import kubernetes_validate.utils as kv_utils
    import yaml
except ImportError as missing:
    sys.exit(
        "error: %s. Install the validator with `pip install kubernetes-validate==1.37.0` "
        "(scripts/test.sh installs it into target/kubernetes-validate-venv)." % missing
    )

SCHEMA_DIR = pathlib.Path(__file__).resolve().parent / "fixtures" / "schemas"

# Custom resources that kubernetes-validate ships no schema for (cert-manager's CRDs), each
# with the JSON schema it is validated against instead.
CUSTOM_SCHEMAS = {
    ("cert-manager.io/v1", "Issuer"): "cert-manager.io_v1_issuer.json",
    ("cert-manager.io/v1", "Certificate"): "cert-manager.io_v1_certificate.json",
}


def describe(resource):
    metadata = resource.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = metadata.get("name", "<no name>")
    qualified = "%s/%s" % (namespace, name) if namespace else name
    return "%s %s %s" % (resource.get("apiVersion"), resource.get("kind"), qualified)


def load_documents(path):
    try:
        with open(path, encoding="utf-8") as stream:
            return [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    except (OSError, yaml.YAMLError) as error:
        print("FATAL cannot read %s: %s" % (path, error))
        sys.exit(2)


def check_custom(resource, schema_file):
    """Returns the validation error messages for a custom resource (empty when valid)."""
    schema = json.loads((SCHEMA_DIR / schema_file).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    return [
        "%s: %s" % ("/".join(str(part) for part in error.absolute_path) or "<root>", error.message)
        for error in sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path))
    ]


def check_builtin(resource, version):
    """Returns (schema version used, error messages) for a built-in kind."""
    try:
        used = kubernetes_validate.validate(resource, version, strict=True)
        return used, []
    except kv_utils.ValidationError as error:
        location = ".".join(str(part) for part in error.path) or "<root>"
        return error.version, ["%s: %s" % (location, error.message)]
    except kv_utils.SchemaNotFoundError as error:
        return version, [error.message + " (and it is not one of the custom resources listed)"]
    except kv_utils.VersionNotSupportedError:
        print(
            "FATAL kubernetes-validate %s has no schemas for Kubernetes %s; it has %s"
            % (kubernetes_validate.__version__, version, ", ".join(kv_utils.all_versions()))
        )
        sys.exit(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kubernetes-version",
        action="append",
        required=True,
        help="Kubernetes version to validate against (repeatable)",
    )
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    passed = 0
    failed = 0
    for path in args.files:
        documents = load_documents(path)
        if not documents:
            print("FAIL %s: no objects (an empty rendering is never valid)" % path)
            failed += 1
            continue
        seen = set()
        for resource in documents:
            if not isinstance(resource, dict) or "kind" not in resource or "apiVersion" not in resource:
                print("FAIL %s: a document is not a Kubernetes object: %.80r" % (path, resource))
                failed += 1
                continue
            identity = describe(resource)
            if identity in seen:
                print("FAIL %s: %s appears twice" % (path, identity))
                failed += 1
                continue
            seen.add(identity)
            custom = CUSTOM_SCHEMAS.get((resource["apiVersion"], resource["kind"]))
            if custom is not None:
                errors = check_custom(resource, custom)
                verdict = "FAIL" if errors else "ok  "
                print(
                    "%s %s: %s: custom resource, no Kubernetes schema; validated against "
                    "tests/fixtures/schemas/%s" % (verdict, path, identity, custom)
                )
                for message in errors:
                    print("       %s" % message)
                if errors:
                    failed += 1
                else:
                    passed += 1
                continue
            for version in args.kubernetes_version:
                used, errors = check_builtin(resource, version)
                verdict = "FAIL" if errors else "ok  "
                print("%s %s: %s: strict, Kubernetes %s" % (verdict, path, identity, used))
                for message in errors:
                    print("       %s" % message)
                if errors:
                    failed += 1
                else:
                    passed += 1

    print("manifests: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
