#!/usr/bin/env bash
# Generates the Python code of the event contracts from proto/ (never edit the output by hand).
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default: libs/common/src, giving the package reflexe.v1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/libs/common/src}
python=${PYTHON:-$root/.venv/bin/python}
mkdir -p "$out"
rm -rf "$out/reflexe"
"$python" -m grpc_tools.protoc -I "$root/proto" --python_out="$out" --pyi_out="$out" \
  $(cd "$root/proto" && find reflexe -name '*.proto' | sort)
for d in "$out/reflexe" "$out/reflexe/v1"; do
  printf '"""Generated from proto/ by scripts/gen_proto.sh: do not edit."""\n' > "$d/__init__.py"
done
