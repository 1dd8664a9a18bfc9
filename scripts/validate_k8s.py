"""Build every Kubernetes overlay (deploy/k8s/overlays/*) and validate it strictly, offline:

    python scripts/validate_k8s.py            # every overlay; exit 1 on the first invalid one

kustomize and kubeconform come from deploy/local/k8s-tools.sh (built once into the project's
cache dir). kubeconform checks each resource with -strict (unknown fields refused) against:
- the Kubernetes JSON schemas shipped by the PyPI package kubernetes-validate (a pinned dev
  dependency: kubeconform's default source is a download the machines here cannot make), for
  KUBERNETES_VERSION; the package's schemas name their shared definitions by an absolute path
  (/api/_definitions.json) under "$defs" and carry an "$id" on kubernetes.io: rewritten here to
  the file beside them, under the draft-4 "definitions" that kubeconform reads them as;
- the operators' CRD schemas of deploy/k8s/schemas/ (scripts/gen_k8s_crd_schemas.py).
A resource of a kind with no schema is an error (no -ignore-missing-schemas).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from importlib import metadata, resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))
CRD_SCHEMAS = K8S_DIR / "schemas"
# The oldest Kubernetes the manifests must be valid for.
KUBERNETES_VERSION = "1.33.0"


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reflexe"
    return Path(os.environ.get("REFLEXE_CACHE_DIR", default)).resolve()


@cache
def tools() -> Path:
    """The directory of kustomize and kubeconform (installed on first use)."""
    out = subprocess.run([str(ROOT / "deploy" / "local" / "k8s-tools.sh")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


@cache
def kubernetes_schemas() -> Path:
    """kubernetes-validate's strict schemas of KUBERNETES_VERSION, their references made relative."""
    package_version = metadata.version("kubernetes-validate")
    name = f"v{KUBERNETES_VERSION}-local-strict"
    target = cache_dir() / f"kubernetes-schemas-{package_version}-r3" / name
    if (target / ".complete").is_file():
        return target
    source = resources.files("kubernetes_validate") / "kubernetes-json-schema" / name
    if not source.is_dir():
        raise RuntimeError(f"kubernetes-validate {package_version} has no schemas for Kubernetes {KUBERNETES_VERSION}")
    partial = target.with_name(name + f".tmp{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name.endswith(".json"):
            text = entry.read_text(encoding="utf-8").replace('"/api/_definitions.json#', '"_definitions.json#')
            # kubeconform reads schemas without "$schema" as draft 4, where "$defs" is no keyword.
            text = text.replace('"$defs":', '"definitions":').replace('#/$defs/', '#/definitions/')
            schema = json.loads(text)
            schema.pop("$id", None)  # references resolve against the file, not kubernetes.io
            (partial / entry.name).write_text(json.dumps(schema), encoding="utf-8")
    (partial / ".complete").touch()
    try:
        partial.rename(target)
    except OSError:  # another run got there first
        subprocess.run(["rm", "-rf", str(partial)], check=False)
    return target


def build(overlay: Path) -> str:
    result = subprocess.run([str(tools() / "kustomize"), "build", str(overlay)], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"kustomize build {overlay.relative_to(ROOT)} failed:\n{result.stderr}")
    return result.stdout


def kubeconform(manifests: str) -> tuple[int, list[dict]]:
    """(exit code, one result per resource) of a strict validation of the manifests."""
    command = [
        str(tools() / "kubeconform"), "-strict", "-summary", "-output", "json", "-verbose",
        "-kubernetes-version", KUBERNETES_VERSION,
        "-schema-location", str(kubernetes_schemas()) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
        "-schema-location", str(CRD_SCHEMAS) + "/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json",
        "-",
    ]
    result = subprocess.run(command, input=manifests, capture_output=True, text=True)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"kubeconform: {result.stdout}\n{result.stderr}") from exc
    return result.returncode, report.get("resources") or []


def main() -> int:
    failed = False
    for overlay in OVERLAYS:
        code, results = kubeconform(build(overlay))
        bad = [r for r in results if r.get("status") != "statusValid"]
        for r in bad:
            print(f"{overlay.name}: {r.get('kind')} {r.get('name')}: {r.get('status')} {r.get('msg')}", file=sys.stderr)
        print(f"{overlay.relative_to(ROOT)}: {len(results) - len(bad)} valid, {len(bad)} invalid", file=sys.stderr)
        failed |= bool(code or bad)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
