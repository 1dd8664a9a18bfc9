#!/usr/bin/env python3
"""Rebuild the offline French geography data shipped in ``reflexe_common.geography``.

Source: the npm package ``@etalab/decoupage-administratif`` (MIT licence, Etalab),
installed with npm into a temporary directory at a pinned version. The script reads
its ``data/communes.json``, ``data/departements.json`` and ``data/regions.json`` and
writes compact CSV files into ``libs/common/src/reflexe_common/geography/data/``:

* ``communes.csv.gz`` (or ``communes.csv`` when small): current communes
  (type ``commune-actuelle``) and the municipal arrondissements of Paris, Lyon and
  Marseille (type ``arrondissement-municipal``), sorted by INSEE code;
* ``departments.csv``: departments, population summed over their current communes;
* ``regions.csv``: regions;
* ``NOTICE.md``: provenance and licence.

``neighbours.csv`` (department adjacency) in the same folder is maintained by hand
and is never touched by this script.

Usage (from the repository root; needs ``npm`` on PATH and access to the npm registry):

    python3 scripts/build_geography.py

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "@etalab/decoupage-administratif"
PACKAGE_VERSION = "6.0.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "libs" / "common" / "src" / "reflexe_common" / "geography" / "data"

# Above this size the communes CSV is written gzip-compressed.
GZIP_THRESHOLD_BYTES = 500 * 1024

COMMUNE_TYPES = ("commune-actuelle", "arrondissement-municipal")
REBUILD_COMMAND = "python3 scripts/build_geography.py"


def install_package(prefix: Path) -> Path:
    """npm-install the pinned package under ``prefix`` and return its root folder."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("build_geography: npm is required (https://nodejs.org/)")
    subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            f"{PACKAGE}@{PACKAGE_VERSION}",
        ],
        check=True,
    )
    root = prefix / "node_modules" / PACKAGE
    installed = json.loads((root / "package.json").read_text(encoding="utf-8"))["version"]
    if installed != PACKAGE_VERSION:
        sys.exit(f"build_geography: expected {PACKAGE}@{PACKAGE_VERSION}, got {installed}")
    return root


def _load(root: Path, name: str) -> list[dict]:
    return json.loads((root / "data" / name).read_text(encoding="utf-8"))


def _csv_text(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _population(entry: dict) -> int | None:
    value = entry.get("population")
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"unexpected population {value!r} for commune {entry.get('code')}")
    return value


def build_rows(root: Path) -> tuple[list[list[object]], list[list[object]], list[list[object]]]:
    communes_json = _load(root, "communes.json")
    departements_json = _load(root, "departements.json")
    regions_json = _load(root, "regions.json")

    regions = sorted(([r["code"], r["nom"]] for r in regions_json), key=lambda r: r[0])
    region_codes = {r[0] for r in regions}

    communes: list[list[object]] = []
    seen: set[str] = set()
    dept_population: dict[str, int] = {}
    for entry in communes_json:
        kind = entry.get("type")
        if kind not in COMMUNE_TYPES:
            continue  # communes déléguées / associées: not current communes
        code = entry["code"]
        if code in seen:
            raise ValueError(f"duplicate commune code {code}")
        seen.add(code)
        population = _population(entry)
        communes.append(
            [code, entry["nom"], entry["departement"], entry["region"], "" if population is None else population]
        )
        if kind == "commune-actuelle":
            # Arrondissements municipaux are part of their commune's population already.
            dept_population[entry["departement"]] = dept_population.get(entry["departement"], 0) + (population or 0)
    communes.sort(key=lambda r: str(r[0]))

    departments = []
    for d in departements_json:
        if d["region"] not in region_codes:
            raise ValueError(f"department {d['code']} has unknown region {d['region']}")
        departments.append([d["code"], d["nom"], d["region"], dept_population.get(d["code"], 0)])
    departments.sort(key=lambda r: str(r[0]))
    dept_codes = {d[0] for d in departments}
    unknown = sorted({c[2] for c in communes} - dept_codes)
    if unknown:
        raise ValueError(f"communes refer to unknown departments: {unknown}")
    return communes, departments, regions


def write_outputs(root: Path, out_dir: Path) -> dict[str, int]:
    communes, departments, regions = build_rows(root)
    out_dir.mkdir(parents=True, exist_ok=True)

    communes_text = _csv_text(["insee_code", "name", "department_code", "region_code", "population"], communes)
    communes_bytes = communes_text.encode("utf-8")
    for stale in ("communes.csv", "communes.csv.gz"):
        (out_dir / stale).unlink(missing_ok=True)
    if len(communes_bytes) > GZIP_THRESHOLD_BYTES:
        communes_name = "communes.csv.gz"
        # mtime=0 and no file name in the header: byte-identical output for identical input.
        with open(out_dir / communes_name, "wb") as raw:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
                gz.write(communes_bytes)
    else:
        communes_name = "communes.csv"
        (out_dir / communes_name).write_bytes(communes_bytes)

    (out_dir / "departments.csv").write_text(
        _csv_text(["code", "name", "region_code", "population"], departments), encoding="utf-8"
    )
    (out_dir / "regions.csv").write_text(_csv_text(["code", "name"], regions), encoding="utf-8")

    licence_text = (root / "LICENSE").read_text(encoding="utf-8")
    copyright_line = next(
        (line.strip() for line in licence_text.splitlines() if line.strip().lower().startswith("copyright")),
        "Copyright (c) Etalab",
    )
    n_communes = len(communes)
    (out_dir / "NOTICE.md").write_text(
        f"""# Geography data: provenance and licence

Files `{communes_name}`, `departments.csv` and `regions.csv` in this folder are derived from
the npm package **`{PACKAGE}`**, version **{PACKAGE_VERSION}**
(files `data/communes.json`, `data/departements.json`, `data/regions.json`).

- Licence of the source package: **MIT License**, {copyright_line}.
  The full licence text is reproduced below.
- Built on: {dt.date.today().isoformat()}
- Rebuilt with (from the repository root, needs `npm`): `{REBUILD_COMMAND}`
  (runs `npm install --prefix <tmp> {PACKAGE}@{PACKAGE_VERSION}`).

Contents:

- `{communes_name}`: `insee_code,name,department_code,region_code,population`,
  {n_communes} rows: communes of type `commune-actuelle` plus the
  `arrondissement-municipal` entries of Paris, Lyon and Marseille, sorted by code.
  `population` is empty when the source has none.
- `departments.csv`: `code,name,region_code,population`; population is the sum of the
  populations of the department's current communes (arrondissements not double-counted).
- `regions.csv`: `code,name`.

`neighbours.csv` (department adjacency, `department_code,neighbour_code`, each pair in both
directions) is **not** produced by this script: it is maintained by hand, covers the 96
metropolitan departments (overseas departments have no land neighbours and no rows), and
was cross-checked against shared boundaries of a department map. Edit it directly.

## Source licence ({PACKAGE} {PACKAGE_VERSION})

```
{licence_text.strip()}
```
""",
        encoding="utf-8",
    )
    return {"communes": len(communes), "departments": len(departments), "regions": len(regions)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reflexe-geo-") as tmp:
        root = install_package(Path(tmp))
        counts = write_outputs(root, args.out)
    print(f"build_geography: wrote {counts} from {PACKAGE}@{PACKAGE_VERSION} into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
