"""The operators' CRD schemas as JSON schemas for kubeconform (deploy/k8s/schemas/), derived from
their published CustomResourceDefinitions.

    python scripts/gen_k8s_crd_schemas.py PATH_TO/k8s-crds [--out deploy/k8s/schemas]

Each served version of each CRD becomes `<group>/<kind>_<version>.json` (kubeconform's
`-schema-location` template: the schemas folder, then `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json`).
Strict like the Kubernetes schemas kubeconform uses with -strict: an object that declares its
properties refuses any other (unless the CRD keeps unknown fields), so a misspelt field of a
Kafka, a Cluster or a PrometheusRule fails validation instead of being silently dropped by the API
server. OpenAPI's `nullable` becomes a JSON-schema "null" type.

The CRDs are Apache-2.0 (NOTICE beside the schemas says whose).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "deploy" / "k8s" / "schemas"


def strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    # Descriptions are dropped (the CRDs document the fields): the schemas stay small.
    out = {key: strict(value) if key not in ("enum", "default", "example") else value
           for key, value in schema.items() if not (key == "description" and isinstance(value, str))}
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def resource_schema(crd: dict[str, Any], version: dict[str, Any]) -> dict[str, Any]:
    spec = crd["spec"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    properties = schema.setdefault("properties", {})
    # The CRD leaves apiVersion and kind free; a manifest must name exactly this kind.
    properties["apiVersion"] = {"type": "string", "enum": [f"{spec['group']}/{version['name']}"]}
    properties["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
    properties["metadata"] = {"type": "object"}  # validated by the API server's own rules
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    return {"$schema": "http://json-schema.org/draft-07/schema#",
            "description": f"{spec['names']['kind']} ({spec['group']}/{version['name']}), "
                           f"derived from its CustomResourceDefinition by scripts/gen_k8s_crd_schemas.py",
            **schema}


def derive(crds_dir: Path) -> dict[Path, str]:
    """Relative path -> JSON text, for every served version of every CRD in the folder."""
    files: dict[Path, str] = {}
    for source in sorted(crds_dir.glob("*.yaml")):
        for document in yaml.safe_load_all(source.read_text(encoding="utf-8")):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            spec = document["spec"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                name = Path(spec["group"]) / f"{spec['names']['kind'].lower()}_{version['name']}.json"
                files[name] = json.dumps(resource_schema(document, version), indent=1, sort_keys=True) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("crds", type=Path, help="folder of CRD YAML files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    files = derive(args.crds)
    if not files:
        parser.error(f"no CustomResourceDefinition in {args.crds}")
    for old in args.out.glob("*/*.json"):
        if old.relative_to(args.out) not in files:
            old.unlink()
    for name, text in files.items():
        (args.out / name).parent.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"{len(files)} schemas in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
